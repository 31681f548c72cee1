# The tokenizer.json tokenizer (src/text/tokenizer*.cpp): its parts on small files, corrupted
# files, concurrent use, and id-for-id agreement with tokenizers.js (tokenizer_reference.mjs, run
# with node from SWITCHYARD_NPM_DIR, default build/npm) on tokenizer_text.txt for the Qwen3,
# DeepSeek-V3 and Llama 2 vocabularies; those cases skip loudly without node or the packages.
# include()d from tests/CMakeLists.txt.
add_executable(test_tokenizer ${CMAKE_CURRENT_LIST_DIR}/test_tokenizer.cpp)
target_include_directories(test_tokenizer PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(test_tokenizer PRIVATE switchyard GTest::gtest_main GTest::gmock)
target_compile_options(test_tokenizer PRIVATE ${SWITCHYARD_WARNINGS})
target_compile_definitions(test_tokenizer PRIVATE SWITCHYARD_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
gtest_discover_tests(test_tokenizer PROPERTIES TIMEOUT 120)
