# `switchyard export-gguf` (include/switchyard/infer/gguf.h); include()d from tests/CMakeLists.txt.
# gguf_writer: the files parsed back by an independent reader, and the exporter's errors.
# gguf_vs_llamacpp: llama.cpp (node-llama-cpp's prebuilt CPU build in build/npm, installed by
# scripts/install-npm-deps.sh) against `switchyard forward` on every architecture llama.cpp runs.
# Exit code 77 = skipped loudly (no numpy/torch; no node or node-llama-cpp).
add_test(NAME gguf_writer
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_gguf_llamacpp.py --mode writer
          --switchyard $<TARGET_FILE:switchyard_cli>)
set_tests_properties(gguf_writer PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
add_test(NAME gguf_vs_llamacpp
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/test_gguf_llamacpp.py --mode llamacpp
          --switchyard $<TARGET_FILE:switchyard_cli>)
set_tests_properties(gguf_vs_llamacpp PROPERTIES SKIP_RETURN_CODE 77 LABELS slow TIMEOUT 900)
