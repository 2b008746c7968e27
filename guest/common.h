/* Shared by the guest workload programs: the on-disk formats (kept in step with
 * src/guest/records.ts), crc32c, a deterministic filler and the
 * kernel-command-line parameter reader. Static, single-threaded, no libc surprises. */
#ifndef REBOUND_GUEST_COMMON_H
#define REBOUND_GUEST_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Record layout, little endian, RECORD_SIZE bytes:
 *   0  magic "RBNDREC1"      8  version u32 (1)    12 size u32
 *  16  seq u64 (from 1)     24  unix time ns u64  32  writer id u64
 *  40  byte offset u64 (where the record belongs; catches misplaced writes)
 *  48  filler: fill_bytes(seed = writer ^ seq * 0x9E3779B97F4A7C15) up to size-8
 *  size-8  zero u32    size-4  crc32c of bytes [0, size-4) */
#define RECORD_MAGIC "RBNDREC1"
#define RECORD_VERSION 1u
#define RECORD_SIZE 4096u
#define RECORD_HEADER 48u

/* File written by the fs workload, little endian:
 *   0 magic "RBNDFIL1"   8 seed u64   16 index u64   24 generation u64   32 size u64
 *  40 filler: fill_bytes(seed ^ index * 0x9E3779B97F4A7C15 ^ generation * 0xC2B2AE3D27D4EB4F)
 *     up to size-8;  size-8 zero u32;  size-4 crc32c of [0, size-4)   (size a multiple of 8) */
#define FILE_MAGIC "RBNDFIL1"
#define FILE_HEADER 40u

static uint32_t crc32c_table[256];

static inline void crc32c_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc32c_table[i] = c;
  }
}

static inline uint32_t crc32c(const uint8_t *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  while (n--) c = crc32c_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/* splitmix64: the same sequence is computed by the TypeScript verifier. */
static inline uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Fills n bytes (n a multiple of 8) with splitmix64 words, little endian. */
static inline void fill_bytes(uint8_t *p, size_t n, uint64_t seed) {
  uint64_t s = seed;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = splitmix64(&s);
    for (int b = 0; b < 8; b++) p[i + b] = (uint8_t)(v >> (8 * b));
  }
}

static inline void put64(uint8_t *p, uint64_t v) { for (int b = 0; b < 8; b++) p[b] = (uint8_t)(v >> (8 * b)); }
static inline void put32(uint8_t *p, uint32_t v) { for (int b = 0; b < 4; b++) p[b] = (uint8_t)(v >> (8 * b)); }
static inline uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int b = 7; b >= 0; b--) v = (v << 8) | p[b]; return v; }
static inline uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int b = 3; b >= 0; b--) v = (v << 8) | p[b]; return v; }

static inline uint64_t now_ns(clockid_t clk) {
  struct timespec ts;
  clock_gettime(clk, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Options come as name=value arguments (init passes the rebound.* kernel parameters). */
static const char *opt(int argc, char **argv, const char *name, const char *dflt) {
  size_t n = strlen(name);
  for (int i = 1; i < argc; i++)
    if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
  return dflt;
}

#endif
