# courier_cc_library(NAME SRCS ... DEPS ...): a library of our own code, warnings as errors.
function(courier_cc_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_include_directories(${name} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
                                            $<INSTALL_INTERFACE:include/courier>)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  courier_warnings(${name})
endfunction()

# courier_cc_test(NAME SRCS ... DEPS ... [LABELS ...]): one GoogleTest binary, registered with ctest.
function(courier_cc_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} courier_testing GTest::gtest GTest::gmock
                                        GTest::gtest_main)
  courier_warnings(${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60
                       PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}")
endfunction()

function(courier_warnings target)
  # Designated initializers leave the rest of an options struct at its defaults on purpose.
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wno-unused-parameter
                                           -Wno-missing-field-initializers)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    # GCC 12 at -O3 reports -Wrestrict inside std::string's own inlined code (GCC PR 105651),
    # which would fail Release builds of correct code.
    target_compile_options(${target} PRIVATE -Wno-restrict)
    # GCC 12 pairs a coroutine frame's operator delete (Asio's awaitable_frame_base, sized) with
    # the aligned_alloc inside Asio's recycling allocator and calls them mismatched (GCC PR
    # 109224, fixed in 13); which coroutines it flags changes with inlining.
    target_compile_options(${target} PRIVATE -Wno-mismatched-new-delete)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND NOT COURIER_SANITIZE AND NOT COURIER_TSAN)
    # At -O3, GCC also flags moves of absl::StatusOr through Asio's coroutine machinery as
    # maybe-uninitialized; they are not. Kept visible as a warning, not an error.
    target_compile_options(${target} PRIVATE -Wno-error=maybe-uninitialized)
  endif()
  if((COURIER_SANITIZE OR COURIER_TSAN) AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # GCC's flow analysis under ASan reports uninitialized reads inside Asio's use_future and
    # coroutine frames that are not there; the normal build keeps the warning.
    target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
  endif()
endfunction()

# courier_proto_library(NAME PROTOS a.proto ... IMPORT_DIRS dir ... [DEPS ...]): protobuf's C++
# for each .proto, generated under ${PROJECT_BINARY_DIR}/gen at its path relative to the first
# import dir that holds it (proto/rpc/wire.proto → gen/rpc/wire.pb.h, included as
# "rpc/wire.pb.h"). CMake's protobuf_generate places outputs relative to the source dir instead.
function(courier_proto_library name)
  cmake_parse_arguments(ARG "" "" "PROTOS;IMPORT_DIRS;DEPS" ${ARGN})
  set(out ${PROJECT_BINARY_DIR}/gen)
  set(srcs)
  set(import_flags)
  foreach(dir ${ARG_IMPORT_DIRS})
    list(APPEND import_flags -I ${dir})
  endforeach()
  foreach(proto ${ARG_PROTOS})
    get_filename_component(abs ${proto} ABSOLUTE)
    courier_proto_relative_path(rel ${abs} "${ARG_IMPORT_DIRS}")
    string(REGEX REPLACE "\\.proto$" "" base ${rel})
    add_custom_command(
      OUTPUT ${out}/${base}.pb.cc ${out}/${base}.pb.h
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
      COMMAND protobuf::protoc --cpp_out=${out} ${import_flags} ${abs}
      DEPENDS ${abs} protobuf::protoc
      COMMENT "protoc ${rel}"
      VERBATIM)
    list(APPEND srcs ${out}/${base}.pb.cc)
  endforeach()
  add_library(${name} STATIC ${srcs})
  target_include_directories(${name} SYSTEM PUBLIC $<BUILD_INTERFACE:${out}>
                                                   $<INSTALL_INTERFACE:include/courier>)
  target_link_libraries(${name} PUBLIC protobuf::libprotobuf ${ARG_DEPS})
  set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()
