# courier_generate(TARGET t PROTOS a.proto ... [IMPORT_DIRS dir ...])
#
# Runs protoc with protobuf's C++ generator and protoc-gen-courier on each .proto and builds the
# results into static library `t` (created if it does not exist), linked with the courier
# runtime. Outputs land in ${CMAKE_CURRENT_BINARY_DIR}/<t>_gen at each file's path relative to
# the first IMPORT_DIR holding it (default: the .proto's own directory), which becomes a PUBLIC
# include dir: proto/examples/echo.proto with IMPORT_DIRS proto gives "examples/echo.courier.h".
# The outputs are regenerated when a .proto or the plugin changes.
# Sets `out` to `proto`'s path relative to the first of `import_dirs` that holds it; a
# configure error if none does. Shared with courier_proto_library.
function(courier_proto_relative_path out proto import_dirs)
  foreach(dir ${import_dirs})
    file(RELATIVE_PATH candidate ${dir} ${proto})
    if(NOT candidate MATCHES "^\\.\\.")
      set(${out} ${candidate} PARENT_SCOPE)
      return()
    endif()
  endforeach()
  message(FATAL_ERROR "${proto} is under none of the import dirs ${import_dirs}")
endfunction()

function(courier_generate)
  cmake_parse_arguments(ARG "" "TARGET" "PROTOS;IMPORT_DIRS" ${ARGN})
  if(NOT ARG_TARGET OR NOT ARG_PROTOS)
    message(FATAL_ERROR "courier_generate: TARGET and PROTOS are required")
  endif()
  if(TARGET protoc-gen-courier)  # building courier itself
    set(plugin $<TARGET_FILE:protoc-gen-courier>)
    set(plugin_dep protoc-gen-courier)
    set(runtime courier_rpc)
  else()  # find_package(courier)
    set(plugin $<TARGET_FILE:courier::protoc-gen-courier>)
    set(plugin_dep courier::protoc-gen-courier)
    set(runtime courier::courier)
  endif()
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${ARG_TARGET}_gen)
  set(import_dirs)
  foreach(dir ${ARG_IMPORT_DIRS})
    get_filename_component(dir ${dir} ABSOLUTE)
    list(APPEND import_dirs ${dir})
  endforeach()
  set(srcs)
  foreach(proto ${ARG_PROTOS})
    get_filename_component(abs ${proto} ABSOLUTE)
    set(dirs ${import_dirs})
    if(NOT dirs)
      get_filename_component(own ${abs} DIRECTORY)
      set(dirs ${own})
    endif()
    courier_proto_relative_path(rel ${abs} "${dirs}")
    set(import_flags)
    foreach(dir ${dirs})
      list(APPEND import_flags -I${dir})
    endforeach()
    string(REGEX REPLACE "\\.proto$" "" base ${rel})
    set(outputs ${out}/${base}.pb.cc ${out}/${base}.pb.h ${out}/${base}.courier.cc
                ${out}/${base}.courier.h)
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out}
      COMMAND protobuf::protoc --plugin=protoc-gen-courier=${plugin} --cpp_out=${out}
              --courier_out=${out} ${import_flags} ${abs}
      DEPENDS ${abs} ${plugin_dep} protobuf::protoc
      COMMENT "protoc + protoc-gen-courier: ${rel}"
      VERBATIM)
    list(APPEND srcs ${out}/${base}.pb.cc ${out}/${base}.courier.cc)
  endforeach()
  if(NOT TARGET ${ARG_TARGET})
    add_library(${ARG_TARGET} STATIC)
  endif()
  target_sources(${ARG_TARGET} PRIVATE ${srcs})
  target_include_directories(${ARG_TARGET} SYSTEM PUBLIC $<BUILD_INTERFACE:${out}>)
  target_link_libraries(${ARG_TARGET} PUBLIC ${runtime} protobuf::libprotobuf)
endfunction()
