# Install rules and the exported package: find_package(wrpn) + target_link_libraries(app wrpn::wrpn).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

install(TARGETS wrpn EXPORT wrpnTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(floor wrpn models deploy train)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${floor}/include/wrpn
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} FILES_MATCHING PATTERN "*.h")
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/include/wrpn/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/wrpn)

set(WRPN_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/wrpn)
# The exported target carries Torch's libraries by path; consumers re-find Torch for its targets.
install(EXPORT wrpnTargets NAMESPACE wrpn:: DESTINATION ${WRPN_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/wrpnConfig.cmake.in
  ${PROJECT_BINARY_DIR}/wrpnConfig.cmake INSTALL_DESTINATION ${WRPN_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/wrpnConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/wrpnConfig.cmake ${PROJECT_BINARY_DIR}/wrpnConfigVersion.cmake
  DESTINATION ${WRPN_CMAKE_DIR})
