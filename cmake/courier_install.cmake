# install(): libraries, headers under include/courier/ (a bare rpc/ would collide with the
# system's <rpc/rpc.h>), protoc-gen-courier, and a CMake package: find_package(courier) gives
# courier::courier and courier_generate().
include(CMakePackageConfigHelpers)
include(GNUInstallDirs)

set(COURIER_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/courier)
# Generated headers of the reflection and health protos, found as
# "courier/reflection/v1/reflection.courier.h" and "grpc/health/v1/health.courier.h".
target_include_directories(courier_services_proto SYSTEM PUBLIC
                           $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/courier>)
install(TARGETS courier_rpc courier_transport courier_wire_proto courier_asio protoc-gen-courier
                courier_services courier_services_proto
        EXPORT courierTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
foreach(dir rpc transport services)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${dir}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/courier/${dir}
          FILES_MATCHING PATTERN "*.h")
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/gen/rpc/wire.pb.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/courier/rpc)
set(services_gen ${PROJECT_BINARY_DIR}/courier_services_proto_gen)
install(FILES ${services_gen}/courier/reflection/v1/reflection.pb.h
              ${services_gen}/courier/reflection/v1/reflection.courier.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/courier/courier/reflection/v1)
install(FILES ${services_gen}/grpc/health/v1/health.pb.h
              ${services_gen}/grpc/health/v1/health.courier.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/courier/grpc/health/v1)
install(EXPORT courierTargets NAMESPACE courier:: DESTINATION ${COURIER_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/courierConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/courierConfig.cmake
                              INSTALL_DESTINATION ${COURIER_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/courierConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/courierConfig.cmake
              ${PROJECT_BINARY_DIR}/courierConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/codegen/courier_generate.cmake
        DESTINATION ${COURIER_CMAKE_DIR})
