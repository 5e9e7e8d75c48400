// Workload for `make bench` (tests/bench/run.sh).
//
//   bench pairs N   prints "ready <pid>", waits for a line on stdin (the go
//                   signal, sent once the tracer has attached), runs a short
//                   warm-up and then N x free(malloc(64)), prints
//                   "ns_per_pair <float>" and exits.
//   bench hold      prints "ready <pid>", waits for a line on stdin, then
//                   allocates 1,000,000 blocks of 32 bytes from 10 distinct
//                   call sites (100,000 each), prints "held <ns_per_alloc>"
//                   and keeps them until stdin reaches EOF.
//   bench scan      like hold, for --unreachable: 1,000,000 blocks of 256
//                   bytes (256 MB of heap), half of them pointed to from a
//                   table in .bss, the other half only from the first word
//                   of one of those (the flood fill's second round); prints
//                   "held <ns_per_alloc>" and keeps them until EOF.
//   bench kpairs N  as pairs, but each round is one poll() of KPOLL_FDS
//                   ignored descriptors (fd -1, no timeout): the kernel
//                   kmallocs the entries that do not fit its stack buffer
//                   and kfrees them, one kmalloc/kfree pair per call, for
//                   kernel mode's cost per pair.
//   bench libs DIR N  dlopen()s DIR/lib00.so .. lib<N-1>.so, prints
//                   "ready <pid>" and waits until stdin reaches EOF: a
//                   process mapping N more libraries, to time attaching.
//
// Build: gcc -O2 -fno-omit-frame-pointer -fno-ipa-icf (frame pointers so the
// tracers can walk user stacks; no identical-code folding so the 10 sites stay
// 10 distinct functions).
#include <dlfcn.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// Every pointer goes through this volatile store, so the compiler cannot
// prove the malloc/free pair useless and drop it.
static void *volatile sink;

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void ready_and_wait(void)
{
	char line[64];
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	if (!fgets(line, sizeof line, stdin)) {
		fprintf(stderr, "bench: no go signal on stdin\n");
		exit(1);
	}
}

static __attribute__((noinline)) void pairs(long n)
{
	for (long i = 0; i < n; i++) {
		void *p = malloc(64);
		sink = p;
		free(p);
	}
}

// do_sys_poll keeps about 30 entries on its stack (256 bytes) and kmallocs
// one chunk for the rest, up to a page of them.
#define KPOLL_FDS 64

static __attribute__((noinline)) void kpairs(long n)
{
	struct pollfd fds[KPOLL_FDS];

	for (int i = 0; i < KPOLL_FDS; i++)
		fds[i] = (struct pollfd){ .fd = -1 };
	for (long i = 0; i < n; i++)
		if (poll(fds, KPOLL_FDS, 0) < 0) {
			perror("bench: poll");
			exit(1);
		}
}

#define HOLD_SITES 10
#define HOLD_PER_SITE 100000L
// In .bss: the pointer table itself must not be a (traced) allocation.
static void *held[HOLD_SITES * HOLD_PER_SITE];

// Ten call sites, hence ten distinct user stacks in the tracer's report.
#define SITE(k)                                                       \
	static __attribute__((noinline)) void site##k(void **out)     \
	{                                                             \
		for (long i = 0; i < HOLD_PER_SITE; i++)              \
			out[i] = malloc(32);                          \
		__asm__ volatile("" ::: "memory");                    \
	}
SITE(0) SITE(1) SITE(2) SITE(3) SITE(4) SITE(5) SITE(6) SITE(7) SITE(8) SITE(9)
static void (*const sites[HOLD_SITES])(void **) = {
	site0, site1, site2, site3, site4, site5, site6, site7, site8, site9,
};

#ifndef SCAN_BLOCKS
#define SCAN_BLOCKS 1000000L
#endif
#define SCAN_SIZE 256
// Not static: the stores into it must stay, though nothing reads it.
void *scan_table[SCAN_BLOCKS / 2];

static __attribute__((noinline)) void scan_site(void)
{
	for (long i = 0; i < SCAN_BLOCKS / 2; i++) {
		void **first = malloc(SCAN_SIZE);
		void **second = malloc(SCAN_SIZE);
		if (!first || !second) {
			fprintf(stderr, "bench: malloc failed\n");
			exit(1);
		}
		first[0] = second;
		second[0] = NULL;
		scan_table[i] = first;
	}
	__asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
	if (argc == 3 && (!strcmp(argv[1], "pairs") || !strcmp(argv[1], "kpairs"))) {
		void (*run)(long) = argv[1][0] == 'k' ? kpairs : pairs;
		long n = atol(argv[2]);
		if (n <= 0) {
			fprintf(stderr, "bench: N must be > 0\n");
			return 2;
		}
		ready_and_wait();
		// Warm-up: fault in the heap, settle the allocator's fast path and
		// the tracer's maps. 1/20 of the run, at most 10,000 pairs.
		run(n / 20 < 10000 ? n / 20 : 10000);
		double t0 = now_ns();
		run(n);
		double t1 = now_ns();
		printf("ns_per_pair %.2f\n", (t1 - t0) / n);
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "hold")) {
		ready_and_wait();
		double t0 = now_ns();
		for (int k = 0; k < HOLD_SITES; k++)
			sites[k](held + k * HOLD_PER_SITE);
		double t1 = now_ns();
		for (long i = 0; i < HOLD_SITES * HOLD_PER_SITE; i++)
			if (!held[i]) {
				fprintf(stderr, "bench: malloc failed\n");
				return 1;
			}
		printf("held %.2f\n", (t1 - t0) / (HOLD_SITES * HOLD_PER_SITE));
		fflush(stdout);
		// Keep everything allocated until the harness closes stdin.
		while (getchar() != EOF)
			;
		return 0;
	}
	if (argc == 2 && !strcmp(argv[1], "scan")) {
		ready_and_wait();
		double t0 = now_ns();
		scan_site();
		double t1 = now_ns();
		printf("held %.2f\n", (t1 - t0) / SCAN_BLOCKS);
		fflush(stdout);
		while (getchar() != EOF)
			;
		return 0;
	}
	if (argc == 4 && !strcmp(argv[1], "libs")) {
		char path[4096];
		for (int i = 0; i < atoi(argv[3]); i++) {
			snprintf(path, sizeof path, "%s/lib%02d.so", argv[2], i);
			if (!dlopen(path, RTLD_NOW)) {
				fprintf(stderr, "bench: %s\n", dlerror());
				return 1;
			}
		}
		printf("ready %d\n", (int)getpid());
		fflush(stdout);
		while (getchar() != EOF)
			;
		return 0;
	}
	fprintf(stderr, "usage: bench pairs N | bench kpairs N | bench hold | bench scan | bench libs DIR N\n");
	return 2;
}
