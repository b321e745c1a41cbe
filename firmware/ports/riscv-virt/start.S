/* RV32 reset entry for QEMU virt (-bios none): stack, gp, the FPU on (F builds), then the
 * shared C reset path. */
    .section .text.start, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, _stack_top
#ifdef __riscv_flen
    li t0, 0x2000           /* mstatus.FS = Initial: F instructions no longer trap */
    csrs mstatus, t0
    fscsr zero              /* round to nearest even, no flags */
#endif
    tail tt_start           /* core/tt_start.c: .data, .bss, stack paint, main() */
