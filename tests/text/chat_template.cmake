# Chat templates (src/text/chat_template.cpp, jinja_*.cpp): the language, errors, tokenizer_config
# reading, and real templates against @huggingface/jinja run with node from build/npm
# (SWITCHYARD_NPM_DIR overrides); those comparisons skip loudly when node or the package is missing.
add_executable(test_chat_template ${CMAKE_CURRENT_LIST_DIR}/test_chat_template.cpp)
target_link_libraries(test_chat_template PRIVATE switchyard GTest::gtest_main GTest::gmock)
target_compile_options(test_chat_template PRIVATE ${SWITCHYARD_WARNINGS})
target_compile_definitions(test_chat_template PRIVATE SWITCHYARD_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(test_chat_template)
