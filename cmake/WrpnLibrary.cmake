# libwrpn.so: the floors' objects in one shared library, exported as wrpn::wrpn. The DEFAULT CPU
# kernel objects come first (see WrpnCpuKernels.cmake).
get_filename_component(WRPN_TORCH_LIB_DIR "${TORCH_LIBRARY}" DIRECTORY)
add_library(wrpn SHARED ${WRPN_CPU_KERNEL_OBJECTS})
get_property(floors GLOBAL PROPERTY WRPN_FLOORS)
get_property(public_includes GLOBAL PROPERTY WRPN_PUBLIC_INCLUDES)
target_link_libraries(wrpn PRIVATE ${floors} $<TARGET_NAME_IF_EXISTS:OpenMP::OpenMP_CXX>
                           PUBLIC ${TORCH_LIBRARIES} nlohmann_json::nlohmann_json)
foreach(dir IN LISTS public_includes)
  target_include_directories(wrpn PUBLIC $<BUILD_INTERFACE:${dir}>)
endforeach()
target_include_directories(wrpn PUBLIC $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/include>
                                       $<INSTALL_INTERFACE:include>)
target_compile_definitions(wrpn PUBLIC $<$<BOOL:${WRPN_CUDA}>:WRPN_WITH_CUDA=1>)
add_library(wrpn::wrpn ALIAS wrpn)
set_target_properties(wrpn PROPERTIES
  VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}
  LINKER_LANGUAGE CXX
  # An installed libwrpn.so finds the Torch (and CUDA) libraries it was built against.
  INSTALL_RPATH "$ORIGIN;${WRPN_TORCH_LIB_DIR}")
