# wrpn_install_program(<target>): installs a program into bin/; installed programs find libwrpn
# next door and the Torch libraries they were built against.
include(GNUInstallDirs)
get_filename_component(WRPN_PROGRAM_TORCH_LIB_DIR "${TORCH_LIBRARY}" DIRECTORY)
function(wrpn_install_program target)
  set_target_properties(${target} PROPERTIES
    INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR};${WRPN_PROGRAM_TORCH_LIB_DIR}")
  install(TARGETS ${target} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endfunction()
