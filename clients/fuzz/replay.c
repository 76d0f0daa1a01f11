/*
 * A main for a libFuzzer target built without libFuzzer (gcc, or clang without its fuzzer
 * runtime): runs LLVMFuzzerTestOneInput once per file named on the command line, in order,
 * so the committed corpus is replayed as a regression test (tests/test_fuzz_spool.py) under
 * AddressSanitizer and UBSan where the compiler has them.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t len);

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        FILE *file = fopen(argv[i], "rb");
        if (!file) {
            perror(argv[i]);
            return 2;
        }
        uint8_t *data = NULL;
        size_t len = 0, cap = 0;
        for (;;) {
            if (len == cap) {
                cap = cap ? 2 * cap : 4096;
                uint8_t *grown = realloc(data, cap);
                if (!grown) {
                    fclose(file);
                    free(data);
                    return 2;
                }
                data = grown;
            }
            size_t got = fread(data + len, 1, cap - len, file);
            if (!got) break;
            len += got;
        }
        fclose(file);
        /* an input of its exact size, so ASan sees a read past its end */
        uint8_t *input = malloc(len ? len : 1);
        if (!input) {
            free(data);
            return 2;
        }
        for (size_t k = 0; k < len; k++) input[k] = data[k];
        free(data);
        LLVMFuzzerTestOneInput(input, len);
        free(input);
        printf("%s: %zu bytes\n", argv[i], len);
    }
    return 0;
}
