/* Filesystem writer: the guest workload for filesystem-level consistency. On an ext4 data disk
 * mounted by init, keeps `files` files under DIR/rebound, rewriting them in turn forever. Each
 * file's content is derived from a seed, its index and a generation (layout in common.h), and is
 * replaced atomically: write a temporary file, fsync, rename over, fsync the directory. So any
 * file with its final name on a crash-consistent replica must verify; the console line
 * `REBOUND file=I gen=G durable` says which state is durable.
 * Arguments (name=value): dir=/mnt files=64 size=65536 rate=20 seed=0 count=0 */
#define _GNU_SOURCE
#include "common.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) { if (errno == EINTR) continue; return -1; }
    p += w; n -= (size_t)w;
  }
  return 0;
}

static int read_header(const char *path, uint64_t *seed, uint64_t *gen) {
  uint8_t h[FILE_HEADER];
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  ssize_t got = read(fd, h, sizeof h);
  close(fd);
  if (got != (ssize_t)sizeof h || memcmp(h, FILE_MAGIC, 8) != 0) return -1;
  *seed = get64(h + 8);
  *gen = get64(h + 24);
  return 0;
}

int main(int argc, char **argv) {
  crc32c_init();
  const char *dir = opt(argc, argv, "dir", "/mnt");
  uint64_t files = strtoull(opt(argc, argv, "files", "64"), NULL, 10);
  uint64_t size = strtoull(opt(argc, argv, "size", "65536"), NULL, 10) / 8 * 8;
  double rate = atof(opt(argc, argv, "rate", "20"));
  uint64_t seed = strtoull(opt(argc, argv, "seed", "0"), NULL, 10);
  uint64_t count = strtoull(opt(argc, argv, "count", "0"), NULL, 10);
  if (files == 0) files = 1;
  if (size < FILE_HEADER + 8) size = FILE_HEADER + 8;

  char root[512], path[600], tmp[600];
  snprintf(root, sizeof root, "%s/rebound", dir);
  mkdir(root, 0755);
  /* Continue where an earlier run (or the protected VM before failover) stopped. */
  uint64_t *gens = calloc(files, sizeof *gens), max_gen = 0, resumed = 0;
  for (uint64_t i = 0; i < files; i++) {
    uint64_t s, g;
    snprintf(path, sizeof path, "%s/f%06llu", root, (unsigned long long)i);
    if (read_header(path, &s, &g) == 0) {
      if (seed == 0) seed = s;
      gens[i] = g;
      if (g > max_gen) max_gen = g;
      resumed++;
    }
  }
  if (seed == 0) seed = now_ns(CLOCK_REALTIME) | 1;
  uint64_t next_gen = max_gen + 1;
  int dfd = open(root, O_RDONLY | O_DIRECTORY);
  uint8_t *buf = malloc(size);
  if (dfd < 0 || !buf) { printf("REBOUND error open %s: %s\n", root, strerror(errno)); return 1; }
  printf("REBOUND ready workload=fs dir=%s files=%llu size=%llu seed=%llu resumed=%llu\n", root,
         (unsigned long long)files, (unsigned long long)size, (unsigned long long)seed,
         (unsigned long long)resumed);
  fflush(stdout);

  uint64_t interval = rate > 0 ? (uint64_t)(1e9 / rate) : 0, done = 0;
  for (uint64_t n = 0; count == 0 || done < count; n++) {
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    uint64_t i = n % files, gen = next_gen++;
    memcpy(buf, FILE_MAGIC, 8);
    put64(buf + 8, seed);
    put64(buf + 16, i);
    put64(buf + 24, gen);
    put64(buf + 32, size);
    fill_bytes(buf + FILE_HEADER, size - FILE_HEADER - 8,
               seed ^ (i * 0x9E3779B97F4A7C15ull) ^ (gen * 0xC2B2AE3D27D4EB4Full));
    memset(buf + size - 8, 0, 4);
    put32(buf + size - 4, crc32c(buf, size - 4));
    snprintf(path, sizeof path, "%s/f%06llu", root, (unsigned long long)i);
    snprintf(tmp, sizeof tmp, "%s/.tmp", root);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write_all(fd, buf, size) != 0 || fsync(fd) != 0 || close(fd) != 0 ||
        rename(tmp, path) != 0 || fsync(dfd) != 0) {
      printf("REBOUND error write file=%llu: %s\n", (unsigned long long)i, strerror(errno));
      fflush(stdout);
      return 1;
    }
    done++;
    printf("REBOUND file=%llu gen=%llu durable\n", (unsigned long long)i, (unsigned long long)gen);
    fflush(stdout);
    if (interval) {
      uint64_t el = now_ns(CLOCK_MONOTONIC) - t0;
      if (el < interval) { uint64_t w = interval - el; struct timespec ts = { (time_t)(w / 1000000000ull), (long)(w % 1000000000ull) }; nanosleep(&ts, NULL); }
    }
  }
  printf("REBOUND done workload=fs files_written=%llu\n", (unsigned long long)done);
  fflush(stdout);
  return 0;
}
