/* The fake llama-server of tests/data/fake_llama (see CMakeLists.txt). */
#define _GNU_SOURCE
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

static void reply_status(int fd, const char *status, const char *body) {
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n", status, strlen(body));
    if (write(fd, head, (size_t) n) < 0 || write(fd, body, strlen(body)) < 0) perror("write");
}

static void reply(int fd, const char *body) { reply_status(fd, "200 OK", body); }

/* Does the model's vocabulary hold byte tokens (<0x80>..<0xFF>)?  A random model samples them,
   and one such byte alone is not valid UTF-8. */
static int has_byte_tokens(const char *model) {
    FILE *f = model ? fopen(model, "rb") : NULL;
    if (!f) return 0;
    static char buf[1 << 24];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return memmem(buf, n, "<0xFF>", 6) != NULL;
}

static int json_int(const char *req, const char *key, int dflt) {
    const char *p = strstr(req, key);
    return p && strchr(p, ':') ? atoi(strchr(p, ':') + 1) : dflt;
}

/* /completion as llama-server answers it (tools/server/server-task.cpp, to_json_non_oaicompat):
   "tokens" with return_tokens, "completion_probabilities" with n_probs (NaN -> null, as
   nlohmann::json writes it), "timings.predicted_n".  FAKE_DECODE: ok | nan | zero | hang. */
static void complete(int fd, const char *req, const char *model) {
    int n = json_int(req, "\"n_predict\"", 4), n_probs = json_int(req, "\"n_probs\"", 0);
    int with_tokens = strstr(req, "\"return_tokens\":true") || strstr(req, "\"return_tokens\": true");
#if defined(DECODE_hang)
    (void) n; (void) n_probs; (void) with_tokens; (void) model; (void) fd;
    for (;;) pause();
#endif
#if defined(DECODE_zero)
    n = 0;
#endif
#if defined(TEXT_strict)
    /* The b10018-era server parses its output with the Content-only chat parser (common/chat.cpp)
       and answers 500 to text that is not valid UTF-8. */
    if (n > 0 && has_byte_tokens(model)) {
        reply_status(fd, "500 Internal Server Error", "{\"error\":{\"code\":500,\"message\":\"The model produced "
                     "output that does not match the expected Content-only format\",\"type\":\"server_error\"}}");
        return;
    }
#else
    (void) model;
#endif
    static char body[65536];
    size_t len = 0;
    len += (size_t) snprintf(body + len, sizeof body - len, "{\"content\":\"%s\",\"tokens\":[", n ? " fake" : "");
    for (int i = 0; with_tokens && i < n; i++)
        len += (size_t) snprintf(body + len, sizeof body - len, "%s%d", i ? "," : "", 40 + i);
    len += (size_t) snprintf(body + len, sizeof body - len, "],\"tokens_predicted\":%d", n);
    if (n_probs > 0) {
        len += (size_t) snprintf(body + len, sizeof body - len, ",\"completion_probabilities\":[");
        for (int i = 0; i < n; i++) {
#if defined(DECODE_nan)
            const char *lp = "null";
#else
            const char *lp = "-1.25";
#endif
            len += (size_t) snprintf(body + len, sizeof body - len, "%s{\"id\":%d,\"token\":\"a\",\"bytes\":[97],"
                                     "\"logprob\":%s,\"top_logprobs\":[{\"id\":%d,\"token\":\"a\",\"bytes\":[97],"
                                     "\"logprob\":%s}]}", i ? "," : "", 40 + i, lp, 40 + i, lp);
        }
        len += (size_t) snprintf(body + len, sizeof body - len, "]");
    }
    snprintf(body + len, sizeof body - len, ",\"timings\":{\"predicted_n\":%d,\"predicted_per_second\":100.0}}", n);
    reply(fd, body);
}

/* The whole request: headers, then Content-Length bytes of body (a client may send them apart). */
static ssize_t read_request(int fd, char *req, size_t cap) {
    size_t len = 0;
    memset(req, 0, cap);
    for (;;) {
        ssize_t n = read(fd, req + len, cap - 1 - len);
        if (n <= 0) return len ? (ssize_t) len : n;
        len += (size_t) n;
        char *end = strstr(req, "\r\n\r\n");
        if (!end) { if (len >= cap - 1) return (ssize_t) len; continue; }
        const char *cl = strcasestr(req, "Content-Length:");
        size_t want = (size_t) (end + 4 - req) + (cl && cl < end ? (size_t) atol(cl + 15) : 0);
        if (len >= want || len >= cap - 1) return (ssize_t) len;
    }
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *model = NULL;
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
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) model = argv[++i];
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
        static char req[65536];
        ssize_t got = read_request(fd, req, sizeof req);
        if (got > 0 && !strncmp(req, "GET /health", 11)) {
            reply(fd, "{\"status\":\"ok\"}");
        } else if (got > 0 && !strncmp(req, "POST /completion", 16)) {
            if (crashes(no_repack)) __builtin_trap();  /* ud2: a real illegal instruction */
            complete(fd, req, model);
        }
        close(fd);
    }
}
