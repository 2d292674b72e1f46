/* Entry points: the BSP's 64-bit boot entry, the AP real-mode trampoline,
 * interrupt stubs, and the switches into and out of user mode. */
#include "guest.h"

    .section .text.entry, "ax"
    .code64
    .global _start
_start:
    cli
    lea     (kstacks + KSTACK_SIZE)(%rip), %rsp
    mov     %rsi, %rdi              /* boot_params */
    call    kmain_bsp
1:  cli
    hlt
    jmp     1b

/* APs arrive from the trampoline in long mode on our page tables. Each
 * takes the next CPU slot and that slot's kernel stack. */
    .global ap_entry64
ap_entry64:
    mov     $1, %eax
    lock xadd %eax, ap_next(%rip)
    mov     %eax, %edi
    lea     1(%rax), %rcx
    imul    $KSTACK_SIZE, %rcx
    lea     kstacks(%rip), %rsp
    add     %rcx, %rsp
    mov     $POST_AP_STACK, %al
    outb    %al, $POST_PORT
    call    kmain_ap
1:  cli
    hlt
    jmp     1b

/* enter_user(saved_ksp, fn, cpu, ustack_top): runs fn(cpu) in CPL3 with
 * IF=1 and IOPL=3; returns when the user side executes the SVC_DONE trap. */
    .global enter_user
enter_user:
    push    %rbx
    push    %rbp
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, (%rdi)
    pushq   $(SEL_UDATA | 3)
    push    %rcx
    pushq   $0x3202
    pushq   $(SEL_UCODE | 3)
    lea     user_entry(%rip), %rax
    push    %rax
    mov     %rsi, %rax
    mov     %edx, %edi
    iretq
user_entry:
    call    *%rax
    mov     $SVC_DONE, %eax
    ud2

/* leave_user(saved_ksp): back onto the kernel stack, returning from
 * enter_user. Called from the #UD handler. */
    .global leave_user
leave_user:
    mov     %rdi, %rsp
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbp
    pop     %rbx
    ret

/* Interrupt and exception stubs: push a dummy error code where the CPU
 * pushes none, then the vector, then every register (struct trap_frame). */
    .altmacro
    .macro ISR n
isr\n:
    .if (\n == 8 || (\n >= 10 && \n <= 14) || \n == 17 || \n == 21 || \n == 29 || \n == 30)
    .else
    pushq   $0
    .endif
    pushq   $\n
    jmp     isr_common
    .endm

    .set i, 0
    .rept 256
    ISR %i
    .set i, i + 1
    .endr

isr_common:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %rbp
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, %rdi
    cld
    call    trap
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rbp
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    add     $16, %rsp
    iretq

    .macro ISR_ADDR n
    .quad isr\n
    .endm
    .section .data
    .balign 8
    .global isr_table
isr_table:
    .set i, 0
    .rept 256
    ISR_ADDR %i
    .set i, i + 1
    .endr

ap_next:
    .long 1

/* The AP trampoline, copied to TRAMPOLINE at run time: real mode straight
 * to long mode (PAE, LME, then PE|PG together), then a far jump to 64-bit
 * code. Position-dependent only through TRAMPOLINE. */
    .section .rodata
    .code16
    .global trampoline_start
trampoline_start:
    cli
    cld
    mov     $POST_AP_REAL, %al
    outb    %al, $POST_PORT
    xor     %ax, %ax
    mov     %ax, %ds
    lgdtl   (TRAMPOLINE + tramp_gdtr - trampoline_start)
    mov     %cr4, %eax
    or      $0x20, %eax
    mov     %eax, %cr4
    movl    (TRAMPOLINE + trampoline_pml4 - trampoline_start), %eax
    mov     %eax, %cr3
    mov     $0xC0000080, %ecx
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000001, %eax
    mov     %eax, %cr0
    mov     $POST_AP_PAGING, %al
    outb    %al, $POST_PORT
    ljmpl   $SEL_KCODE, $(TRAMPOLINE + tramp64 - trampoline_start)
    .code64
tramp64:
    mov     $POST_AP_LONG, %al
    outb    %al, $POST_PORT
    mov     $SEL_KDATA, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    movabs  $ap_entry64, %rax
    jmp     *%rax
    .balign 8
tramp_gdt:
    .quad   0
    .quad   0x00af9a000000ffff
    .quad   0x00cf92000000ffff
tramp_gdtr:
    .word   23
    .long   TRAMPOLINE + tramp_gdt - trampoline_start
    .global trampoline_pml4
trampoline_pml4:
    .long   0
    .global trampoline_end
trampoline_end:
    .section .note.GNU-stack, "", @progbits
