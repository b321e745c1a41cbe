/* RV32 reset entry for QEMU virt (-bios none): stack, gp, then C. */
    .section .text.start, "ax"
    .globl _start
_start:
    .option push
    .option norelax
    la gp, __global_pointer$
    .option pop
    la sp, _stack_top
    call rv_reset
1:  wfi
    j 1b
