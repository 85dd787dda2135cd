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
            printf("usage: llama-server [options]\n  -lv, --verbosity, --log-verbosity N\n");
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
