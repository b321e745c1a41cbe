/* <string.h> where a libc exists; the prototypes of core/tt_libc.c on bare metal without one
 * (the riscv64-unknown-elf toolchain ships no libc headers). */
#ifndef TT_STRING_H
#define TT_STRING_H
#ifdef TT_NO_LIBC
#include <stddef.h>
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
#else
#include <string.h>
#endif
#endif
