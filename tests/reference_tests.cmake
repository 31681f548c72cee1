# The float64 reference tests: fast layer vs reference, finite-difference gradients and routing
# invariants over the registry, all driven by tests/router_cases.json. include()d from
# tests/CMakeLists.txt (GTest and GoogleTest loaded).
foreach(name test_layer_vs_reference test_gradients test_routing_invariants)
  add_executable(${name} ${name}.cpp)
  target_link_libraries(${name} PRIVATE switchyard GTest::gtest_main GTest::gmock)
  target_compile_options(${name} PRIVATE ${SWITCHYARD_WARNINGS})
  # tests/router_cases.json, the case table they share with tests/golden/test_golden.py.
  target_compile_definitions(${name} PRIVATE SWITCHYARD_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  gtest_discover_tests(${name} DISCOVERY_TIMEOUT 60)
endforeach()
