# wrpn_add_floor(<target> [INTERNAL] SOURCES ... PUBLIC_INCLUDE <dir> [DEPENDS <floor>...]): one
# floor of the library as an OBJECT library with its own include directories. A floor sees its
# own public headers, its own private sources (by relative include) and the public headers of
# the floors it DEPENDS on, nothing else; the shared library libwrpn.so is linked from all
# floors. An INTERNAL floor's headers are not part of libwrpn's interface (nor installed).
function(wrpn_add_floor target)
  cmake_parse_arguments(F "INTERNAL" "PUBLIC_INCLUDE" "SOURCES;DEPENDS" ${ARGN})
  add_library(${target} OBJECT ${F_SOURCES})
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${F_PUBLIC_INCLUDE}>)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES} ${F_DEPENDS}
                                   PRIVATE fmt::fmt-header-only nlohmann_json::nlohmann_json)
  target_compile_definitions(${target} PUBLIC $<$<BOOL:${WRPN_CUDA}>:WRPN_WITH_CUDA=1>)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
  set_property(GLOBAL APPEND PROPERTY WRPN_FLOORS ${target})
  if(NOT F_INTERNAL)
    set_property(GLOBAL APPEND PROPERTY WRPN_PUBLIC_INCLUDES ${F_PUBLIC_INCLUDE})
  endif()
endfunction()
