# Hand-written functions that try to break each probe-placement rule
# (leaktrace/placement.py). tests/unit/test_placement.py links this file into
# a shared object and checks where place_probe puts each entry probe.
# The probe is assumed to read rdi (and rsi where a test says so).

        .text

# The glibc free shape: test, then an emulated je. Probe moves to +3.
        .globl free_like
        .type free_like, @function
free_like:
        test %rdi, %rdi
        je 1f
        mov %rdi, %rax
1:      ret
        .size free_like, .-free_like

# A loop that jumps back to the je at +3: a probe there would fire again on
# every iteration, so the entry must stay.
        .globl loop_into_prologue
        .type loop_into_prologue, @function
loop_into_prologue:
        test %rdi, %rdi
.Lagain:
        je 1f
        sub $1, %rdi
        jmp .Lagain
1:      ret
        .size loop_into_prologue, .-loop_into_prologue

# A branch into the middle of the skipped bytes (+5), not at the probe itself.
        .globl jump_into_skipped
        .type jump_into_skipped, @function
jump_into_skipped:
        mov $1, %eax
.Lmid:
        test %rdi, %rdi
        je 1f
        add $1, %eax
        cmp $3, %eax
        jne .Lmid
1:      ret
        .size jump_into_skipped, .-jump_into_skipped

# A jump back to the very entry is the same as a new call: the probe may move.
        .globl loop_to_entry
        .type loop_to_entry, @function
loop_to_entry:
        test %rdi, %rdi
        je 1f
        sub $1, %rdi
        jmp loop_to_entry
1:      ret
        .size loop_to_entry, .-loop_to_entry

# The first instruction overwrites the argument the probe reads.
        .globl writes_rdi
        .type writes_rdi, @function
writes_rdi:
        lea 8(%rdi), %rdi
        je 1f
1:      ret
        .size writes_rdi, .-writes_rdi

# Same, through a sub-register: writing edi zero-extends into rdi.
        .globl writes_edi
        .type writes_edi, @function
writes_edi:
        mov %esi, %edi
        je 1f
1:      ret
        .size writes_edi, .-writes_edi

# A register the probe does not read may be written.
        .globl writes_rax
        .type writes_rax, @function
writes_rax:
        mov %rdi, %rax
        test %rax, %rax
        je 1f
1:      ret
        .size writes_rax, .-writes_rax

# A memory write before the branch.
        .globl writes_memory
        .type writes_memory, @function
writes_memory:
        mov %rdi, (%rsi)
        je 1f
1:      ret
        .size writes_memory, .-writes_memory

# An atomic read-modify-write.
        .globl atomic_first
        .type atomic_first, @function
atomic_first:
        lock incl counter(%rip)
        je 1f
1:      ret
        .size atomic_first, .-atomic_first

# The stack pointer moves before the branch.
        .globl changes_rsp
        .type changes_rsp, @function
changes_rsp:
        sub $8, %rsp
        test %rdi, %rdi
        je 1f
1:      add $8, %rsp
        ret
        .size changes_rsp, .-changes_rsp

# A frame-pointer prologue: push is emulated, so the entry is cheap already.
        .globl push_first
        .type push_first, @function
push_first:
        push %rbp
        mov %rsp, %rbp
        test %rdi, %rdi
        je 1f
1:      pop %rbp
        ret
        .size push_first, .-push_first

# A call first: emulated, so the probe stays; on a kernel without branch
# emulation it cannot be skipped either.
        .globl call_first
        .type call_first, @function
call_first:
        call free_like
        test %rdi, %rdi
        je 1f
1:      ret
        .size call_first, .-call_first

# A computed jump (a switch table) could land anywhere in the function.
        .globl indirect_jump
        .type indirect_jump, @function
indirect_jump:
        test %rdi, %rdi
        je 1f
        jmp *%rsi
1:      ret
        .size indirect_jump, .-indirect_jump

# endbr64, then the kernel's 5-byte nop (emulated from Linux 6.16; spelled in
# bytes because gas picks a 4-byte encoding the kernel does not emulate), then push.
        .globl endbr_nop5
        .type endbr_nop5, @function
endbr_nop5:
        endbr64
        .byte 0x0f, 0x1f, 0x44, 0x00, 0x00
        push %rbx
        pop %rbx
        ret
        .size endbr_nop5, .-endbr_nop5

# The probe would go on the je at +3, but code outside the function jumps
# there: from far away (rel32, in entered_far_source below) ...
        .globl entered_far
        .type entered_far, @function
entered_far:
        test %rdi, %rdi
.Lfar_je:
        je 1f
1:      ret
        .size entered_far, .-entered_far

# ... and from just before the function (rel8).
        .globl entered_near_source
        .type entered_near_source, @function
entered_near_source:
        xor %eax, %eax
        jmp .Lnear_je
        .size entered_near_source, .-entered_near_source
        .globl entered_near
        .type entered_near, @function
entered_near:
        test %rdi, %rdi
.Lnear_je:
        je 1f
1:      ret
        .size entered_near, .-entered_near

# A second symbol names the je at +3 of this function: callers of it are unknown.
        .globl alias_inside
        .type alias_inside, @function
alias_inside:
        test %rdi, %rdi
        .globl alias_inside_je
alias_inside_je:
        je 1f
1:      ret
        .size alias_inside, .-alias_inside

# No .size directive: the function's extent is unknown, so the entry stays.
        .globl no_size
        .type no_size, @function
no_size:
        test %rdi, %rdi
        je 1f
1:      ret

        .skip 4096, 0xcc
        .globl entered_far_source
        .type entered_far_source, @function
entered_far_source:
        jmp .Lfar_je
        .size entered_far_source, .-entered_far_source

        .data
counter:
        .long 0
        .section .note.GNU-stack,"",@progbits
