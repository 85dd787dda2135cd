/* The fake llama-server of tests/data/fake_llama (see CMakeLists.txt). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int crashes(int no_repack) {
#if defined(CRASH_always)
    (void) no_repack;
    return 1;
#elif defined(CRASH_amx) && !defined(NO_AMX)
    return !no_repack;
#elif defined(CRASH_avx512) && !defined(NO_AVX512)
    (void) no_repack;
    return 1;
#else
    (void) no_repack;
    return 0;
#endif
}

/* --help in common/arg.cpp's layout (names, then the help at column 40).  FAKE_HELP=turboquant
   offers what AtomicBot-ai's TurboQuant fork adds: the turbo KV cache types (the allowed values
   wrap at 70 columns, as there) and its speculative type names mtp and nextn. */
#if defined(HELP_turboquant)
#define CACHE_TYPES "allowed values: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1,\n" \
    "                                        turbo2, turbo3, turbo4\n"
#define SPEC_TYPES "none,draft-simple,draft-eagle3,draft-mtp,mtp,nextn,ngram-simple,ngram-mod"
#else
#define CACHE_TYPES "allowed values: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1\n"
#define SPEC_TYPES "none,draft-simple,draft-mtp,ngram-simple,ngram-mod"
#endif
static const char HELP[] =
    "----- common params -----\n\n"
    "-h,    --help, --usage                  print usage and exit\n"
    "--version                               show version and build info\n"
    "-c,    --ctx-size N                     size of the prompt context (default: 0)\n"
    "-n,    --predict, --n-predict N         number of tokens to predict (default: -1)\n"
    "-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')\n"
    "--repack, -nr, --no-repack              whether to enable weight repacking (default: enabled)\n"
    "-ctk,  --cache-type-k TYPE              KV cache data type for K\n"
    "                                        " CACHE_TYPES
    "                                        (default: f16)\n"
    "-ctv,  --cache-type-v TYPE              KV cache data type for V\n"
    "                                        " CACHE_TYPES
    "                                        (default: f16)\n"
    "-ot,   --override-tensor <tensor name pattern>=<buffer type>,...\n"
    "                                        override tensor buffer type\n"
    "-ncmoe, --n-cpu-moe N                   keep the MoE weights of the first N layers in the CPU\n"
    "-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM\n"
    "-m,    --model FNAME                    model path to load\n"
    "-lv,   --verbosity, --log-verbosity N   Set the verbosity threshold\n"
    "--host HOST                             ip address to listen (default: 127.0.0.1)\n"
    "--port PORT                             port to listen (default: 8080)\n"
    "--spec-draft-model, -md, --model-draft FNAME\n"
    "                                        draft model for speculative decoding (default: unused)\n"
    "--spec-type " SPEC_TYPES "\n"
    "                                        comma-separated list of types of speculative decoding to use\n"
    "--spec-draft-n-max N                    number of tokens to draft for speculative decoding (default: 3)\n";

static void reply(int fd, const char *body) {
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n", strlen(body));
    if (write(fd, head, (size_t) n) < 0 || write(fd, body, strlen(body)) < 0) perror("write");
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 8080, no_repack = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--version")) {
            printf("version: %d (build %d, commit %s)\nbuilt with a C compiler for a test\n",
                   BUILD_NUMBER, BUILD_NUMBER, BUILD_COMMIT);
            return 0;
        }
        if (!strcmp(argv[i], "--help")) {
            fputs(HELP, stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--port") && i + 1 < argc) port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--host") && i + 1 < argc) host = argv[++i];
        else if (!strcmp(argv[i], "--no-repack") || !strcmp(argv[i], "-nr")) no_repack = 1;
    }
    fprintf(stderr, "system_info: n_threads = 1 (n_threads_batch = 1) / 2 | CPU : SSE3 = 1 | AVX2 = 1 | REPACK = %d | \n",
            !no_repack);
    int srv = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short) port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    if (bind(srv, (struct sockaddr *) &addr, sizeof addr) || listen(srv, 8)) { perror("bind"); return 1; }
    for (;;) {
        int fd = accept(srv, NULL, NULL);
        if (fd < 0) continue;
        char req[65536] = {0};
        ssize_t got = read(fd, req, sizeof req - 1);
        if (got > 0 && !strncmp(req, "GET /health", 11)) {
            reply(fd, "{\"status\":\"ok\"}");
        } else if (got > 0 && !strncmp(req, "POST /completion", 16)) {
            if (crashes(no_repack)) __builtin_trap();  /* ud2: a real illegal instruction */
            const char *np = strstr(req, "\"n_predict\"");
            int n = np ? atoi(strchr(np, ':') + 1) : 4;
            char body[256];
            snprintf(body, sizeof body, "{\"content\":\" fake\",\"tokens_predicted\":%d,"
                     "\"timings\":{\"predicted_per_second\":100.0}}", n);
            reply(fd, body);
        }
        close(fd);
    }
}
