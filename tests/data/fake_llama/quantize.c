/* The fake llama-quantize of tests/data/fake_llama: exit 0 with a zeroed or missing output. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *pos[4] = {0};
    int n = 0;
    for (int i = 1; i < argc && n < 4; i++) {
        if (argv[i][0] != '-') pos[n++] = argv[i];
    }
    if (n < 3) {
        fprintf(stderr, "usage: %s [--allow-requantize] [--pure] model-f32.gguf [model-quant.gguf] type [nthreads]\n", argv[0]);
        return 1;
    }
#if defined(QUANTIZE_zero)
    static char zeros[1 << 20];
    FILE *out = fopen(pos[1], "wb");
    if (!out || fwrite(zeros, 1, sizeof zeros, out) != sizeof zeros) return 1;
    fclose(out);
#endif
    printf("main: quantize time = 1.00 ms\n");
    return 0;
}
