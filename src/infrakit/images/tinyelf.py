r"""Tiny Linux x86 executables written byte by byte: ``hello`` and ``pause``.

No assembler, compiler or linker: every byte is placed here, and the code hides in fields
of the ELF header and of its one program header that Linux does not read. What makes that
possible: to run an ELF file, the kernel (``fs/binfmt_elf.c``) checks the magic,
``e_type``, ``e_machine``, ``e_phentsize`` and ``e_phnum``, reads the program headers at
``e_phoff`` and maps each ``PT_LOAD`` segment (``p_offset``, ``p_vaddr``, ``p_filesz``,
``p_memsz`` and the R/W/X bits of ``p_flags``), then jumps to ``e_entry``. It does not
read bytes 7 to 15 of ``e_ident``, ``e_version``, ``e_flags``, ``e_ehsize``, the section
header fields, ``p_paddr``, the upper bits of ``p_flags``, or ``p_align`` (which it
reads only for position-independent files; these are ``ET_EXEC``). Those bytes can hold
code, linked by two-byte short jumps (``eb`` and a signed offset from the next
instruction). Linux also clears every general register at ``execve`` on x86
(``ELF_PLAT_INIT``), so the code counts on them being 0 and mostly sets low bytes only.

The section header fields stay 0 (``e_shoff`` included: ``readelf`` warns about a file
whose section header offset is not 0 while it has no sections), and the bytes of
``e_ident`` that say class, byte order and version are the true ones, so ``readelf -h``
reads every header without a warning. Each header field is written once, and where the
program header overlaps the ELF header the two must agree on every shared byte: the
builder refuses a byte written twice with two values (:class:`_Layout`).

``hello``, 32-bit (i386; runs where the kernel has ``CONFIG_IA32_EMULATION``): 72 bytes
and the message, at least 76. The tables show every byte for the message
``Hello Docker world!\n``: its length L is 20 (0x14), its address M is 0x08048048, the
file's size S is 92 (0x5c). The program header starts at 0x2c, inside the ELF header: its
``p_type`` (1, ``PT_LOAD``) is ``e_phnum`` = 1 and ``e_shentsize`` = 0, its ``p_offset``
(0) is ``e_shnum`` and ``e_shstrndx`` = 0. Code runs from 0x07 and follows the jumps::

    0x00  7f 45 4c 46       e_ident magic
    0x04  01 01 01          EI_CLASS 32-bit, EI_DATA LE, EI_VERSION 1
    0x07  b9 48 80 04 08    EI_OSABI, EI_ABIVERSION, EI_PAD   mov ecx, M
    0x0c  b2 14             EI_PAD                            mov dl, L
    0x0e  eb 04             EI_PAD                            jmp 0x14
    0x10  02 00             e_type ET_EXEC
    0x12  03 00             e_machine EM_386
    0x14  b0 04             e_version                         mov al, 4      (write)
    0x16  eb 0c             e_version                         jmp 0x24
    0x18  07 80 04 08       e_entry 0x08048007
    0x1c  2c 00 00 00       e_phoff 0x2c
    0x20  00 00 00 00       e_shoff 0
    0x24  43                e_flags                           inc ebx        (fd 1)
    0x25  cd 80             e_flags                           int 0x80: write(1, M, L)
    0x27  eb 0f             e_flags, e_ehsize                 jmp 0x38
    0x29  00                e_ehsize
    0x2a  20 00             e_phentsize 32
    0x2c  01 00 00 00       e_phnum 1, e_shentsize 0 = p_type PT_LOAD
    0x30  00 00 00 00       e_shnum 0, e_shstrndx 0 = p_offset 0
    0x34  00 80 04 08       p_vaddr 0x08048000
    0x38  89 d8             p_paddr                           mov eax, ebx   (exit: 1)
    0x3a  eb 09             p_paddr                           jmp 0x45
    0x3c  5c 00 00 00       p_filesz S, the whole file
    0x40  5c 00 00 00       p_memsz S
    0x44  05                p_flags PF_R|PF_X (its low byte)
    0x45  4b                p_flags (upper bytes, unused)     dec ebx        (status 0)
    0x46  cd 80             p_flags                           int 0x80: exit(0)
    0x48  48 65 6c 6c       p_align (unused): "Hell", the message's first bytes
    0x4c  the rest of the message (a message shorter than 4 bytes is padded with zeros)

``hello``, 64-bit (x86-64): 102 bytes and the message, at least 104. For the same
message, M is 0x400066 and S is 122 (0x7a). Here the program header starts at 0x30 and
covers the ELF header's last 16 bytes: ``p_type`` is ``e_flags`` (1); ``p_flags`` is
``e_ehsize`` (5: PF_R|PF_X) and ``e_phentsize`` (56), which sets only bits Linux ignores;
``p_offset`` is ``e_phnum`` (1) and the three zero section fields, so the segment starts
at file offset 1 and is mapped at 0x400001 (the same offset within a page, as ``mmap``
needs)::

    0x00  7f 45 4c 46       e_ident magic
    0x04  02 01 01          EI_CLASS 64-bit, EI_DATA LE, EI_VERSION 1
    0x07  be 66 00 40 00    EI_OSABI, EI_ABIVERSION, EI_PAD   mov esi, M
    0x0c  b2 14             EI_PAD                            mov dl, L
    0x0e  eb 04             EI_PAD                            jmp 0x14
    0x10  02 00             e_type ET_EXEC
    0x12  3e 00             e_machine EM_X86_64
    0x14  b0 01             e_version                         mov al, 1      (write)
    0x16  eb 48             e_version                         jmp 0x60
    0x18  07 00 40 00 0*4   e_entry 0x400007
    0x20  30 00 00 00 0*4   e_phoff 0x30
    0x28  0*8               e_shoff 0
    0x30  01 00 00 00       e_flags 1 = p_type PT_LOAD
    0x34  05 00 38 00       e_ehsize 5, e_phentsize 56 = p_flags 0x380005
    0x38  01 00 0*6         e_phnum 1, e_shentsize, e_shnum, e_shstrndx 0 = p_offset 1
    0x40  01 00 40 00 0*4   p_vaddr 0x400001
    0x48  6a 3c 58          p_paddr                           push 60; pop rax   (exit)
    0x4b  31 ff             p_paddr                           xor edi, edi   (status 0)
    0x4d  0f 05             p_paddr                           syscall: exit(0)
    0x4f  00                p_paddr
    0x50  79 0*7            p_filesz S-1: from offset 1 to the end
    0x58  79 0*7            p_memsz S-1
    0x60  ff c7             p_align (unused)                  inc edi        (fd 1)
    0x62  0f 05             p_align                           syscall: write(1, M, L)
    0x64  eb e2             p_align                           jmp 0x48
    0x66  48 65             p_align: "He", the message's first bytes
    0x68  the rest of the message (zeros up to here if it is shorter than 2 bytes)

``pause`` (x86-64): 116 bytes, with the headers of the 64-bit ``hello`` (S is 116). It
blocks SIGINT and SIGTERM and waits for one with ``rt_sigtimedwait``: a blocked signal is
queued even for a container's PID 1 (which the kernel would otherwise spare a signal it
has no handler for), so ``docker stop`` ends it at once, with status 0. The wait returns
-EINTR when the process is stopped and continued (``SIGSTOP`` and ``SIGCONT``), so it
waits again on a negative answer. Other signals keep their default action. Its code::

    0x07  68 02 40 00 00    push 0x4002        the set {SIGINT, SIGTERM}: bits 1 and 14
    0x0c  54 5e             push rsp; pop rsi  rsi = the set's address
    0x0e  eb 04             jmp 0x14
    0x14  b0 0e             mov al, 14         (rt_sigprocmask)
    0x16  eb 30             jmp 0x48
    0x48  41 b2 08          mov r10b, 8        (the set's size)
    0x4b  0f 05             syscall            rt_sigprocmask(SIG_BLOCK, set, NULL, 8)
    0x4d  eb 11 00          jmp 0x60; a spare byte of p_paddr
    0x60  48 87 f7          xchg rsi, rdi      rdi = the set, rsi = NULL
    0x63  b8 80 00 00 00    mov eax, 128       (rt_sigtimedwait)
    0x68  0f 05             syscall            rt_sigtimedwait(set, NULL, NULL, 8)
    0x6a  85 c0 78 f5       test eax, eax; js 0x63   (-EINTR: wait again)
    0x6e  b0 3c             mov al, 60         (exit; rax held the signal's number)
    0x70  31 ff 0f 05       xor edi, edi; syscall: exit(0)
"""

from __future__ import annotations

import struct

#: Where each kind of file is mapped: the addresses a linker would choose.
BASE_32 = 0x08048000
BASE_64 = 0x00400000
#: The message's length is the immediate byte of ``mov dl, L``.
MAX_MESSAGE = 255

_MAGIC = b"\x7fELF"
_CLASS_32, _CLASS_64, _LITTLE_ENDIAN, _EV_CURRENT = 1, 2, 1, 1
_ET_EXEC, _EM_386, _EM_X86_64 = 2, 3, 62
_PT_LOAD, _PF_R_X = 1, 5
_PHDR32_AT, _PHDR64_AT = 0x2C, 0x30
_PHDR32_SIZE, _PHDR64_SIZE = 32, 56


class MessageError(ValueError):
    """A message that a tiny ``hello`` cannot print."""


class _Layout:
    """The bytes of a file being laid out. Every byte is written once, or again with the
    same value: where two headers overlap they must agree, and code must not land on a
    field that is read."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._written = bytearray()

    def put(self, offset: int, value: bytes) -> None:
        end = offset + len(value)
        if end > len(self._data):
            grow = end - len(self._data)
            self._data += bytes(grow)
            self._written += bytes(grow)
        for i, byte in enumerate(value, offset):
            if self._written[i] and self._data[i] != byte:
                raise AssertionError(f"byte 0x{i:02x} written as 0x{self._data[i]:02x} "
                                     f"and as 0x{byte:02x}")
            self._data[i], self._written[i] = byte, 1

    def field(self, offset: int, fmt: str, value: int) -> None:
        self.put(offset, struct.pack("<" + fmt, value))

    def code(self, offset: int, *instructions: bytes, then: int | None = None) -> None:
        """Instructions from ``offset`` on, and a short jump to ``then`` after them."""
        run = b"".join(instructions)
        if then is not None:
            run += _jump(offset + len(run), then)
        self.put(offset, run)

    def padded(self, size: int) -> bytes:
        return bytes(self._data) + bytes(max(0, size - len(self._data)))


def _jump(at: int, to: int, opcode: int = 0xEB) -> bytes:
    """A short jump placed at ``at`` (``jmp rel8``, or another opcode of that form such as
    ``js``, 0x78): the offset counts from the next instruction."""
    rel = to - (at + 2)
    if not -128 <= rel <= 127:
        raise AssertionError(f"a short jump from 0x{at:02x} cannot reach 0x{to:02x}")
    return bytes([opcode]) + rel.to_bytes(1, "little", signed=True)


def _checked(message: bytes) -> bytes:
    if len(message) > MAX_MESSAGE:
        raise MessageError(f"message: {len(message)} bytes; a tiny hello prints at most "
                           f"{MAX_MESSAGE} (its length is one byte of its code)")
    return message


def _elf32(out: _Layout, entry: int, size: int) -> None:
    """The ELF header's read fields and the one program header at 0x2c, mapping the whole
    file at :data:`BASE_32`. Left to code: e_ident[7:16], e_version, e_flags, e_ehsize,
    p_paddr, p_flags' upper bytes, p_align."""
    out.put(0, _MAGIC + bytes([_CLASS_32, _LITTLE_ENDIAN, _EV_CURRENT]))
    out.field(0x10, "H", _ET_EXEC)
    out.field(0x12, "H", _EM_386)
    out.field(0x18, "I", entry)
    out.field(0x1C, "I", _PHDR32_AT)
    out.field(0x20, "I", 0)  # e_shoff
    out.field(0x2A, "H", _PHDR32_SIZE)
    out.put(0x2C, struct.pack("<HHHH", 1, 0, 0, 0))  # e_phnum, e_shentsize, e_shnum, ..
    p = _PHDR32_AT
    out.field(p, "I", _PT_LOAD)
    out.field(p + 4, "I", 0)  # p_offset
    out.field(p + 8, "I", BASE_32)  # p_vaddr
    out.field(p + 16, "I", size)  # p_filesz
    out.field(p + 20, "I", size)  # p_memsz
    out.field(p + 24, "B", _PF_R_X)


def _elf64(out: _Layout, entry: int, size: int) -> None:
    """The ELF header's read fields and the one program header at 0x30, mapping the file
    from offset 1 at :data:`BASE_64` + 1. Left to code: e_ident[7:16], e_version,
    p_paddr, p_align."""
    out.put(0, _MAGIC + bytes([_CLASS_64, _LITTLE_ENDIAN, _EV_CURRENT]))
    out.field(0x10, "H", _ET_EXEC)
    out.field(0x12, "H", _EM_X86_64)
    out.field(0x18, "Q", entry)
    out.field(0x20, "Q", _PHDR64_AT)
    out.field(0x28, "Q", 0)  # e_shoff
    out.field(0x36, "H", _PHDR64_SIZE)
    out.put(0x38, struct.pack("<HHHH", 1, 0, 0, 0))  # e_phnum, e_shentsize, e_shnum, ..
    p = _PHDR64_AT
    out.field(p, "I", _PT_LOAD)  # = e_flags
    out.field(p + 4, "H", _PF_R_X)  # = e_ehsize; e_phentsize is p_flags' upper half
    out.field(p + 8, "Q", 1)  # p_offset
    out.field(p + 16, "Q", BASE_64 + 1)  # p_vaddr
    out.field(p + 32, "Q", size - 1)  # p_filesz
    out.field(p + 40, "Q", size - 1)  # p_memsz


def hello32(message: bytes) -> bytes:
    """An i386 executable that writes ``message`` to stdout and exits 0."""
    text = _checked(message)
    at = 0x48
    size = max(_PHDR32_AT + _PHDR32_SIZE, at + len(text))
    out = _Layout()
    _elf32(out, BASE_32 + 0x07, size)
    out.code(0x07, b"\xb9" + struct.pack("<I", BASE_32 + at),  # mov ecx, message
             b"\xb2" + bytes([len(text)]), then=0x14)  # mov dl, length
    out.code(0x14, b"\xb0\x04", then=0x24)  # mov al, 4 (write)
    out.code(0x24, b"\x43", b"\xcd\x80", then=0x38)  # inc ebx (stdout); int 0x80
    out.code(0x38, b"\x89\xd8", then=0x45)  # mov eax, ebx (1: exit)
    out.code(0x45, b"\x4b", b"\xcd\x80")  # dec ebx (status 0); int 0x80
    out.put(at, text)
    return out.padded(size)


def hello64(message: bytes) -> bytes:
    """An x86-64 executable that writes ``message`` to stdout and exits 0."""
    text = _checked(message)
    at = 0x66
    size = max(_PHDR64_AT + _PHDR64_SIZE, at + len(text))
    out = _Layout()
    _elf64(out, BASE_64 + 0x07, size)
    out.code(0x07, b"\xbe" + struct.pack("<I", BASE_64 + at),  # mov esi, message
             b"\xb2" + bytes([len(text)]), then=0x14)  # mov dl, length
    out.code(0x14, b"\xb0\x01", then=0x60)  # mov al, 1 (write)
    out.code(0x60, b"\xff\xc7", b"\x0f\x05", then=0x48)  # inc edi (stdout); syscall
    out.code(0x48, b"\x6a\x3c\x58",  # push 60; pop rax (exit)
             b"\x31\xff", b"\x0f\x05")  # xor edi, edi (status 0); syscall
    out.put(at, text)
    return out.padded(size)


def pause64() -> bytes:
    """An x86-64 executable that waits for SIGINT or SIGTERM and then exits 0."""
    size = 0x74
    out = _Layout()
    _elf64(out, BASE_64 + 0x07, size)
    sigset = (1 << (2 - 1)) | (1 << (15 - 1))  # SIGINT, SIGTERM
    out.code(0x07, b"\x68" + struct.pack("<I", sigset),  # push the set
             b"\x54\x5e", then=0x14)  # push rsp; pop rsi
    out.code(0x14, b"\xb0\x0e", then=0x48)  # mov al, 14 (rt_sigprocmask)
    out.code(0x48, b"\x41\xb2\x08",  # mov r10b, 8 (the set's size)
             b"\x0f\x05", then=0x60)  # syscall: block the set
    wait = 0x63
    out.code(0x60, b"\x48\x87\xf7",  # xchg rsi, rdi
             b"\xb8" + struct.pack("<I", 128),  # mov eax, 128 (rt_sigtimedwait)
             b"\x0f\x05", b"\x85\xc0")  # syscall; test eax, eax
    out.put(0x6C, _jump(0x6C, wait, opcode=0x78))  # js wait (-EINTR)
    out.code(0x6E, b"\xb0\x3c", b"\x31\xff", b"\x0f\x05")  # exit(0)
    return out.padded(size)
