/* Record writer: the guest workload that lets Rebound prove a replica is crash-consistent.
 * Writes fixed-size self-checking records (layout in common.h) in order at increasing offsets
 * with O_DIRECT + fdatasync, at a set rate, and prints each durable sequence number to the
 * console. A record the console called durable must be on any replica taken after that line.
 * On start it scans the disk and continues after the highest contiguous valid record, so a
 * failed-over copy of the VM keeps extending the same sequence. Console lines name the disk, as
 * init runs one writer per data disk when given several.
 * Arguments (name=value): disk=/dev/vda rate=200 every=1 count=0 writer=0 resume=1 */
#define _GNU_SOURCE
#include "common.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <unistd.h>

static int valid_record(const uint8_t *r, uint64_t offset, uint64_t want_seq) {
  if (memcmp(r, RECORD_MAGIC, 8) != 0) return 0;
  if (get32(r + 12) != RECORD_SIZE) return 0;
  if (get64(r + 16) != want_seq || get64(r + 40) != offset) return 0;
  return crc32c(r, RECORD_SIZE - 4) == get32(r + RECORD_SIZE - 4);
}

/* Highest seq such that records 1..seq are all valid at their places. */
static uint64_t scan_contiguous(int fd, uint64_t disk_size, uint8_t *buf, size_t buflen) {
  uint64_t seq = 0;
  for (uint64_t off = 0; off + RECORD_SIZE <= disk_size; off += buflen) {
    size_t want = buflen;
    if (off + want > disk_size) want = (size_t)(disk_size - off) / RECORD_SIZE * RECORD_SIZE;
    ssize_t got = pread(fd, buf, want, (off_t)off);
    if (got <= 0) return seq;
    for (size_t i = 0; i + RECORD_SIZE <= (size_t)got; i += RECORD_SIZE) {
      if (!valid_record(buf + i, off + i, seq + 1)) return seq;
      seq++;
    }
  }
  return seq;
}

static void sleep_until(uint64_t t_ns) {
  struct timespec ts = { (time_t)(t_ns / 1000000000ull), (long)(t_ns % 1000000000ull) };
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}

int main(int argc, char **argv) {
  crc32c_init();
  const char *disk = opt(argc, argv, "disk", "/dev/vda");
  double rate = atof(opt(argc, argv, "rate", "200"));
  uint64_t every = strtoull(opt(argc, argv, "every", "1"), NULL, 10);
  uint64_t count = strtoull(opt(argc, argv, "count", "0"), NULL, 10);
  uint64_t writer = strtoull(opt(argc, argv, "writer", "0"), NULL, 10);
  int resume = atoi(opt(argc, argv, "resume", "1"));
  if (every == 0) every = 1;
  if (writer == 0) writer = now_ns(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 32);

  int fd = open(disk, O_RDWR | O_DIRECT);
  if (fd < 0) { printf("REBOUND error open %s: %s\n", disk, strerror(errno)); return 1; }
  uint64_t disk_size = 0;
  if (ioctl(fd, BLKGETSIZE64, &disk_size) != 0) {
    off_t end = lseek(fd, 0, SEEK_END);
    disk_size = end > 0 ? (uint64_t)end : 0;
  }
  const size_t scan_len = 1u << 20;
  uint8_t *buf;
  if (posix_memalign((void **)&buf, 4096, scan_len) != 0) return 1;

  uint64_t seq = resume ? scan_contiguous(fd, disk_size, buf, scan_len) : 0;
  uint64_t capacity = disk_size / RECORD_SIZE;
  printf("REBOUND ready workload=records disk=%s size=%llu writer=%llu resume_seq=%llu rate=%g\n", disk,
         (unsigned long long)disk_size, (unsigned long long)writer, (unsigned long long)seq, rate);
  fflush(stdout);

  uint64_t start = now_ns(CLOCK_MONOTONIC), written = 0, last_print = start, printed = seq;
  uint64_t interval = rate > 0 ? (uint64_t)(1e9 / rate) : 0;
  uint8_t *r = buf;
  while (seq < capacity && (count == 0 || written < count)) {
    if (interval) {
      uint64_t due = start + written * interval, now = now_ns(CLOCK_MONOTONIC);
      /* Falling more than a second behind (a paused VM) restarts the schedule, not a burst. */
      if (now > due + 1000000000ull) { start = now; written = 0; due = now; }
      if (due > now) sleep_until(due);
    }
    uint64_t next = seq + 1, off = seq * RECORD_SIZE;
    memset(r, 0, RECORD_HEADER);
    memcpy(r, RECORD_MAGIC, 8);
    put32(r + 8, RECORD_VERSION);
    put32(r + 12, RECORD_SIZE);
    put64(r + 16, next);
    put64(r + 24, now_ns(CLOCK_REALTIME));
    put64(r + 32, writer);
    put64(r + 40, off);
    fill_bytes(r + RECORD_HEADER, RECORD_SIZE - RECORD_HEADER - 8, writer ^ (next * 0x9E3779B97F4A7C15ull));
    memset(r + RECORD_SIZE - 8, 0, 4);
    put32(r + RECORD_SIZE - 4, crc32c(r, RECORD_SIZE - 4));
    if (pwrite(fd, r, RECORD_SIZE, (off_t)off) != (ssize_t)RECORD_SIZE || fdatasync(fd) != 0) {
      printf("REBOUND error write seq=%llu disk=%s: %s\n", (unsigned long long)next, disk, strerror(errno));
      fflush(stdout);
      return 1;
    }
    seq = next;
    written++;
    uint64_t now = now_ns(CLOCK_MONOTONIC);
    if (seq % every == 0 || now - last_print >= 1000000000ull) {
      printf("REBOUND seq=%llu durable disk=%s\n", (unsigned long long)seq, disk);
      fflush(stdout);
      last_print = now;
      printed = seq;
    }
  }
  if (printed != seq) printf("REBOUND seq=%llu durable disk=%s\n", (unsigned long long)seq, disk);
  printf("REBOUND done workload=records seq=%llu disk=%s\n", (unsigned long long)seq, disk);
  fflush(stdout);
  return 0;
}
