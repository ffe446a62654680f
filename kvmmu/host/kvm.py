"""A small VMM over the machine's own ``/dev/kvm``: VM, memslots, vCPUs, runs and binary stats.

Pure Python: ``fcntl.ioctl`` on the three kinds of KVM file descriptor (system, VM, vCPU),
``ctypes`` mirrors of the structures in ``include/uapi/linux/kvm.h`` and
``arch/x86/include/uapi/asm/kvm.h``, and ``mmap`` for guest RAM and the ``kvm_run`` page. The
ioctls are the ones ``Documentation/virt/kvm/api.rst`` documents, each wrapped in one method
whose docstring names it. Everything that holds a file descriptor or a mapping is a context
manager and closes it; every ``KVM_RUN`` is bounded by an interval timer (in the main thread)
and by a maximum number of exits.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import numpy as np
import pandas as pd

from kvmmu.errors import KvmmuError

KVM_DEVICE = "/dev/kvm"
KVM_API_VERSION = 12
KVMIO = 0xAE


class HostKvmError(KvmmuError):
    """The host KVM refused an ioctl or stopped the guest in a way kvmmu did not expect."""


class HostKvmUnavailable(HostKvmError):
    """``/dev/kvm`` is missing, not permitted, or too old for what kvmmu needs."""


class GuestTimeout(HostKvmError):
    """A guest ran longer than its time or exit budget (``KVM_RUN`` was interrupted)."""


# -- ioctl numbers (include/uapi/asm-generic/ioctl.h: _IO, _IOR, _IOW, _IOWR) -----------------


def _ioc(direction: int, nr: int, size: int) -> int:
    return direction << 30 | size << 16 | KVMIO << 8 | nr


def _io(nr: int) -> int:
    return _ioc(0, nr, 0)


def _ior(nr: int, size: int) -> int:
    return _ioc(2, nr, size)


def _iow(nr: int, size: int) -> int:
    return _ioc(1, nr, size)


def _iowr(nr: int, size: int) -> int:
    return _ioc(3, nr, size)


# -- structures ------------------------------------------------------------------------------

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64


class KvmUserspaceMemoryRegion(ctypes.Structure):
    """``struct kvm_userspace_memory_region``."""

    _fields_ = (
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
    )


class KvmDirtyLog(ctypes.Structure):
    """``struct kvm_dirty_log``."""

    _fields_ = (("slot", u32), ("padding1", u32), ("dirty_bitmap", u64))


class KvmRegs(ctypes.Structure):
    """``struct kvm_regs`` (x86)."""

    _fields_ = tuple(
        (name, u64)
        for name in (
            *("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp"),
            *(f"r{n}" for n in range(8, 16)),
            *("rip", "rflags"),
        )
    )


class KvmSegment(ctypes.Structure):
    """``struct kvm_segment``."""

    _fields_ = (
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    )


class KvmDtable(ctypes.Structure):
    """``struct kvm_dtable``."""

    _fields_ = (("base", u64), ("limit", u16), ("padding", u16 * 3))


class KvmSregs(ctypes.Structure):
    """``struct kvm_sregs`` (x86)."""

    _fields_ = (
        *((name, KvmSegment) for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")),
        ("gdt", KvmDtable),
        ("idt", KvmDtable),
        *((name, u64) for name in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")),
        ("interrupt_bitmap", u64 * 4),
    )


class KvmTranslation(ctypes.Structure):
    """``struct kvm_translation``."""

    _fields_ = (
        ("linear_address", u64),
        ("physical_address", u64),
        ("valid", u8),
        ("writeable", u8),
        ("usermode", u8),
        ("pad", u8 * 5),
    )


class KvmCpuidEntry2(ctypes.Structure):
    """``struct kvm_cpuid_entry2``."""

    _fields_ = (
        *((name, u32) for name in ("function", "index", "flags", "eax", "ebx", "ecx", "edx")),
        ("padding", u32 * 3),
    )


MAX_CPUID_ENTRIES = 256


class KvmCpuid2(ctypes.Structure):
    """``struct kvm_cpuid2`` with room for :data:`MAX_CPUID_ENTRIES` entries."""

    _fields_ = (("nent", u32), ("padding", u32), ("entries", KvmCpuidEntry2 * MAX_CPUID_ENTRIES))


class KvmRunIo(ctypes.Structure):
    """The ``io`` member of ``struct kvm_run``'s exit union."""

    _fields_ = (("direction", u8), ("size", u8), ("port", u16), ("count", u32), ("offset", u64))


class KvmRunMmio(ctypes.Structure):
    """The ``mmio`` member of ``struct kvm_run``'s exit union."""

    _fields_ = (("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8))


class KvmRunExit(ctypes.Union):
    """The part of ``struct kvm_run``'s exit union kvmmu reads."""

    _fields_ = (("io", KvmRunIo), ("mmio", KvmRunMmio), ("data", u64 * 32))


class KvmRun(ctypes.Structure):
    """The head of ``struct kvm_run``, the page shared with each vCPU."""

    _fields_ = (
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        ("cr8", u64),
        ("apic_base", u64),
        ("exit", KvmRunExit),
    )


class KvmStatsHeader(ctypes.Structure):
    """``struct kvm_stats_header``."""

    _fields_ = tuple(
        (name, u32)
        for name in ("flags", "name_size", "num_desc", "id_offset", "desc_offset", "data_offset")
    )


class KvmStatsDesc(ctypes.Structure):
    """``struct kvm_stats_desc`` without its trailing name."""

    _fields_ = (
        ("flags", u32),
        ("exponent", ctypes.c_int16),
        ("size", u16),
        ("offset", u32),
        ("bucket_size", u32),
    )


KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _iowr(0x05, 8)
KVM_CREATE_VCPU = _io(0x41)
KVM_GET_DIRTY_LOG = _iow(0x42, ctypes.sizeof(KvmDirtyLog))
KVM_SET_USER_MEMORY_REGION = _iow(0x46, ctypes.sizeof(KvmUserspaceMemoryRegion))
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, ctypes.sizeof(KvmRegs))
KVM_SET_REGS = _iow(0x82, ctypes.sizeof(KvmRegs))
KVM_GET_SREGS = _ior(0x83, ctypes.sizeof(KvmSregs))
KVM_SET_SREGS = _iow(0x84, ctypes.sizeof(KvmSregs))
KVM_TRANSLATE = _iowr(0x85, ctypes.sizeof(KvmTranslation))
KVM_SET_CPUID2 = _iow(0x90, 8)
KVM_GET_STATS_FD = _io(0xCE)

KVM_CAP_USER_MEMORY = 3
KVM_CAP_NR_VCPUS = 9
KVM_CAP_READONLY_MEM = 81
KVM_CAP_BINARY_STATS_FD = 203
REQUIRED_CAPS = {
    "KVM_CAP_USER_MEMORY": KVM_CAP_USER_MEMORY,
    "KVM_CAP_READONLY_MEM": KVM_CAP_READONLY_MEM,
    "KVM_CAP_BINARY_STATS_FD": KVM_CAP_BINARY_STATS_FD,
}

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1

# struct kvm_run exit_reason values
KVM_EXIT_NAMES = {
    0: "KVM_EXIT_UNKNOWN",
    1: "KVM_EXIT_EXCEPTION",
    2: "KVM_EXIT_IO",
    3: "KVM_EXIT_HYPERCALL",
    4: "KVM_EXIT_DEBUG",
    5: "KVM_EXIT_HLT",
    6: "KVM_EXIT_MMIO",
    8: "KVM_EXIT_SHUTDOWN",
    9: "KVM_EXIT_FAIL_ENTRY",
    10: "KVM_EXIT_INTR",
    17: "KVM_EXIT_INTERNAL_ERROR",
}
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_INTR = 10

# KVM_STATS_TYPE_* (bits 3:0 of a descriptor's flags)
KVM_STATS_TYPE_MASK = 0xF
KVM_STATS_TYPE_NAMES = ("cumulative", "instant", "peak", "linear_hist", "log_hist")


def _ioctl(fd: int, request: int, arg: int | ctypes.Structure = 0, what: str = "") -> int:
    """One ioctl; an OSError becomes :class:`HostKvmError` naming the request."""
    try:
        if isinstance(arg, ctypes.Structure):
            return fcntl.ioctl(fd, request, arg, True)  # type: ignore[no-any-return]
        return fcntl.ioctl(fd, request, arg)
    except InterruptedError:
        raise
    except OSError as exc:
        raise HostKvmError(
            f"{what or hex(request)} failed: {os.strerror(exc.errno or 0)} (errno {exc.errno})"
        ) from exc


def open_kvm_fd(path: str = KVM_DEVICE) -> int:
    """Open ``/dev/kvm`` read-write, or raise :class:`HostKvmUnavailable` with the fix.

    No kernel counterpart (userspace ``open("/dev/kvm", O_RDWR | O_CLOEXEC)``).
    """
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise HostKvmUnavailable(
            f"{path} does not exist: this machine has no KVM (not Linux, a VM without nested "
            "virtualisation, or the kvm module is not loaded: try `sudo modprobe kvm_intel` or "
            "`sudo modprobe kvm_amd`). The comparison with a real KVM is skipped; kvmmu itself "
            "works without it."
        ) from exc
    except PermissionError as exc:
        raise HostKvmUnavailable(
            f"{path} exists but you may not open it: add yourself to the kvm group "
            "(`sudo usermod -aG kvm $USER`, then log in again) or ask your administrator"
        ) from exc
    except OSError as exc:
        raise HostKvmUnavailable(f"cannot open {path}: {exc.strerror}") from exc


def kvm_usable(path: str = KVM_DEVICE) -> tuple[bool, str]:
    """Whether ``/dev/kvm`` opens with the API and capabilities kvmmu needs, and why not.

    No kernel counterpart: what a test asks before running on the host.
    """
    try:
        with Kvm(path):
            return True, "usable"
    except HostKvmUnavailable as exc:
        return False, str(exc)


# -- binary stats ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatDescriptor:
    """One descriptor of a binary stats file (``struct kvm_stats_desc``)."""

    name: str
    kind: str
    size: int
    offset: int


def read_stats_descriptors(fd: int) -> tuple[str, list[StatDescriptor], int]:
    """The stats file's id string, its descriptors, and the offset of its data block.

    Reads the layout ``Documentation/virt/kvm/api.rst`` gives for ``KVM_GET_STATS_FD``.
    """
    header = KvmStatsHeader.from_buffer_copy(os.pread(fd, ctypes.sizeof(KvmStatsHeader), 0))
    ident = os.pread(fd, header.name_size, header.id_offset).split(b"\0", 1)[0].decode()
    desc_size = ctypes.sizeof(KvmStatsDesc) + header.name_size
    raw = os.pread(fd, desc_size * header.num_desc, header.desc_offset)
    descriptors = []
    for i in range(header.num_desc):
        chunk = raw[i * desc_size : (i + 1) * desc_size]
        desc = KvmStatsDesc.from_buffer_copy(chunk[: ctypes.sizeof(KvmStatsDesc)])
        name = chunk[ctypes.sizeof(KvmStatsDesc) :].split(b"\0", 1)[0].decode()
        kind_index = desc.flags & KVM_STATS_TYPE_MASK
        kind = KVM_STATS_TYPE_NAMES[kind_index] if kind_index < 5 else str(kind_index)
        descriptors.append(StatDescriptor(name, kind, desc.size, desc.offset))
    return ident, descriptors, header.data_offset


def read_stats(fd: int) -> pd.Series:
    """Every scalar statistic of a stats fd as an int64 Series under the kernel's names.

    Histograms (``size`` > 1) are summed into one number. ``kvm_stats_read`` in
    ``virt/kvm/binary_stats.c`` serves the bytes.
    """
    _, descriptors, data_offset = read_stats_descriptors(fd)
    end = max((d.offset + 8 * d.size for d in descriptors), default=0)
    data = np.frombuffer(os.pread(fd, end, data_offset), dtype=np.uint64)
    values = {d.name: int(data[d.offset // 8 : d.offset // 8 + d.size].sum()) for d in descriptors}
    return pd.Series(values, dtype="int64", name="count")


class _Closing:
    """``with`` support for the fd holders: leaving the block calls ``close``."""

    def close(self) -> None:
        """Release what the object holds. No kernel counterpart."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- the system fd ---------------------------------------------------------------------------


class Kvm(_Closing):
    """The system file descriptor of ``/dev/kvm``; checks the API version and capabilities.

    ``KVM_GET_API_VERSION`` must be 12 and ``KVM_CAP_USER_MEMORY``, ``KVM_CAP_READONLY_MEM`` and
    ``KVM_CAP_BINARY_STATS_FD`` present, else :class:`HostKvmUnavailable`.
    """

    def __init__(self, path: str = KVM_DEVICE) -> None:
        self.fd = open_kvm_fd(path)
        try:
            self.api_version = _ioctl(self.fd, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")
            if self.api_version != KVM_API_VERSION:
                raise HostKvmUnavailable(
                    f"{path} speaks KVM API {self.api_version}, kvmmu needs {KVM_API_VERSION}"
                )
            missing = [n for n, cap in REQUIRED_CAPS.items() if not self.check_extension(cap)]
            if missing:
                raise HostKvmUnavailable(
                    f"this kernel's KVM lacks {', '.join(missing)}; kvmmu needs Linux 5.14+"
                )
        except BaseException:
            os.close(self.fd)
            raise

    def check_extension(self, cap: int) -> int:
        """``KVM_CHECK_EXTENSION``: 0 if the capability is absent, else its value."""
        return _ioctl(self.fd, KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION")

    def vcpu_mmap_size(self) -> int:
        """``KVM_GET_VCPU_MMAP_SIZE``: the size of each vCPU's ``kvm_run`` mapping."""
        return _ioctl(self.fd, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")

    def supported_cpuid(self) -> KvmCpuid2:
        """``KVM_GET_SUPPORTED_CPUID``: the CPUID leaves KVM can give a guest."""
        cpuid = KvmCpuid2(nent=MAX_CPUID_ENTRIES)
        _ioctl(self.fd, KVM_GET_SUPPORTED_CPUID, cpuid, "KVM_GET_SUPPORTED_CPUID")
        return cpuid

    def create_vm(self) -> VmFd:
        """``KVM_CREATE_VM`` (machine type 0)."""
        return VmFd(self, _ioctl(self.fd, KVM_CREATE_VM, 0, "KVM_CREATE_VM"))

    def close(self) -> None:
        """Close the system fd. No kernel counterpart."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(slots=True)
class HostMemslot:
    """One memslot of a host VM: anonymous memory mapped at ``guest_phys_addr``."""

    slot: int
    guest_phys_addr: int
    memory: mmap.mmap
    flags: int

    @property
    def npages(self) -> int:
        """Number of 4 KiB pages in the slot. No kernel counterpart."""
        return len(self.memory) >> 12

    def region(self) -> KvmUserspaceMemoryRegion:
        """This slot as ``struct kvm_userspace_memory_region``."""
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self.memory))
        return KvmUserspaceMemoryRegion(
            self.slot, self.flags, self.guest_phys_addr, len(self.memory), addr
        )


class VmFd(_Closing):
    """A VM file descriptor: memslots, vCPUs, dirty log and the VM's binary stats."""

    def __init__(self, kvm: Kvm, fd: int) -> None:
        self.kvm = kvm
        self.fd = fd
        self.slots: dict[int, HostMemslot] = {}
        self.vcpus: list[VcpuFd] = []
        self._stack = ExitStack()
        self._stats_fd = -1

    def set_user_memory_region(self, slot: int, gpa: int, size: int, flags: int = 0) -> HostMemslot:
        """``KVM_SET_USER_MEMORY_REGION``: back ``size`` bytes at ``gpa`` with fresh memory.

        The memory is mapped without transparent huge pages, so KVM maps it with 4 KiB sptes
        only (``host_pfn_mapping_level`` finds no huge page).
        """
        if slot in self.slots:
            raise HostKvmError(f"memslot {slot} exists; use set_memslot_flags to change it")
        memory = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        memory.madvise(mmap.MADV_NOHUGEPAGE)
        host_slot = HostMemslot(slot, gpa, memory, flags)
        try:
            _ioctl(self.fd, KVM_SET_USER_MEMORY_REGION, host_slot.region(), "KVM_SET_USER_MEM")
        except BaseException:
            memory.close()
            raise
        self.slots[slot] = host_slot
        return host_slot

    def set_memslot_flags(self, slot: int, flags: int) -> None:
        """``KVM_SET_USER_MEMORY_REGION`` on an existing slot with new flags (KVM_MR_FLAGS_ONLY)."""
        host_slot = self.slots[slot]
        host_slot.flags = flags
        _ioctl(self.fd, KVM_SET_USER_MEMORY_REGION, host_slot.region(), "KVM_SET_USER_MEM")

    def get_dirty_log(self, slot: int) -> list[int]:
        """``KVM_GET_DIRTY_LOG``: the gfns written since the last call (and clear the log)."""
        host_slot = self.slots[slot]
        bitmap = (ctypes.c_uint64 * ((host_slot.npages + 63) // 64))()
        log = KvmDirtyLog(slot, 0, ctypes.addressof(bitmap))
        _ioctl(self.fd, KVM_GET_DIRTY_LOG, log, "KVM_GET_DIRTY_LOG")
        base = host_slot.guest_phys_addr >> 12
        return [
            base + 64 * i + bit
            for i, word in enumerate(bitmap)
            for bit in range(64)
            if word >> bit & 1
        ]

    def create_vcpu(self) -> VcpuFd:
        """``KVM_CREATE_VCPU`` with the next id, its ``kvm_run`` mapping and guest CPUID."""
        vcpu_id = len(self.vcpus)
        fd = _ioctl(self.fd, KVM_CREATE_VCPU, vcpu_id, "KVM_CREATE_VCPU")
        vcpu = self._stack.enter_context(VcpuFd(self, vcpu_id, fd))
        self.vcpus.append(vcpu)
        return vcpu

    def read(self, gpa: int, size: int) -> bytes:
        """``size`` bytes of guest memory at ``gpa`` (within one slot). No kernel counterpart."""
        slot = self._slot_at(gpa, size)
        off = gpa - slot.guest_phys_addr
        return bytes(slot.memory[off : off + size])

    def write(self, gpa: int, data: bytes) -> None:
        """Store ``data`` in guest memory at ``gpa`` (within one slot). No kernel counterpart."""
        slot = self._slot_at(gpa, len(data))
        off = gpa - slot.guest_phys_addr
        slot.memory[off : off + len(data)] = data

    def _slot_at(self, gpa: int, size: int) -> HostMemslot:
        for slot in self.slots.values():
            if slot.guest_phys_addr <= gpa and gpa + size <= slot.guest_phys_addr + len(
                slot.memory
            ):
                return slot
        raise HostKvmError(f"gpa {gpa:#x}+{size} is not inside one memslot of this VM")

    def stats(self) -> pd.Series:
        """The VM's binary stats (``KVM_GET_STATS_FD`` on the VM fd), ``kvm_vm_stat`` names."""
        if self._stats_fd < 0:
            self._stats_fd = _ioctl(self.fd, KVM_GET_STATS_FD, 0, "KVM_GET_STATS_FD")
        return read_stats(self._stats_fd)

    def close(self) -> None:
        """Close the vCPUs, the stats fd, the VM fd, then unmap guest memory.

        No kernel counterpart."""
        self._stack.close()
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        for slot in self.slots.values():
            slot.memory.close()
        self.slots.clear()


@dataclass(frozen=True, slots=True)
class Exit:
    """Why ``KVM_RUN`` returned: the exit reason and, for I/O and MMIO, what was accessed."""

    reason: int
    port: int = 0
    value: int = 0
    phys_addr: int = 0
    is_write: bool = False

    @property
    def name(self) -> str:
        """The ``KVM_EXIT_*`` name of the reason."""
        return KVM_EXIT_NAMES.get(self.reason, str(self.reason))


class VcpuFd(_Closing):
    """A vCPU file descriptor with its ``kvm_run`` page."""

    def __init__(self, vm: VmFd, vcpu_id: int, fd: int) -> None:
        self.vm = vm
        self.vcpu_id = vcpu_id
        self.fd = fd
        self._stats_fd = -1
        try:
            self._run_map = mmap.mmap(fd, vm.kvm.vcpu_mmap_size(), mmap.MAP_SHARED)
            cpuid = vm.kvm.supported_cpuid()
            _ioctl(fd, KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2")
        except BaseException:
            os.close(fd)
            raise
        self.run_struct = KvmRun.from_buffer(self._run_map)

    def get_regs(self) -> KvmRegs:
        """``KVM_GET_REGS``."""
        regs = KvmRegs()
        _ioctl(self.fd, KVM_GET_REGS, regs, "KVM_GET_REGS")
        return regs

    def set_regs(self, regs: KvmRegs) -> None:
        """``KVM_SET_REGS``."""
        _ioctl(self.fd, KVM_SET_REGS, regs, "KVM_SET_REGS")

    def get_sregs(self) -> KvmSregs:
        """``KVM_GET_SREGS``."""
        sregs = KvmSregs()
        _ioctl(self.fd, KVM_GET_SREGS, sregs, "KVM_GET_SREGS")
        return sregs

    def set_sregs(self, sregs: KvmSregs) -> None:
        """``KVM_SET_SREGS``."""
        _ioctl(self.fd, KVM_SET_SREGS, sregs, "KVM_SET_SREGS")

    def translate(self, gva: int) -> KvmTranslation:
        """``KVM_TRANSLATE``: the guest's own walk of ``gva`` with the current registers."""
        tr = KvmTranslation(linear_address=gva)
        _ioctl(self.fd, KVM_TRANSLATE, tr, "KVM_TRANSLATE")
        return tr

    def stats(self) -> pd.Series:
        """The vCPU's binary stats (``KVM_GET_STATS_FD`` on the vCPU), ``kvm_vcpu_stat`` names."""
        if self._stats_fd < 0:
            self._stats_fd = _ioctl(self.fd, KVM_GET_STATS_FD, 0, "KVM_GET_STATS_FD")
        return read_stats(self._stats_fd)

    def run(self, timeout: float = 2.0) -> Exit:
        """One ``KVM_RUN``, interrupted after ``timeout`` seconds (:class:`GuestTimeout`).

        The bound is an interval timer whose signal makes ``KVM_RUN`` return ``-EINTR``; it is
        armed only in the main thread (signals go there), elsewhere the guest's own loop
        bound and the caller's exit budget hold.
        """
        with _alarm(timeout):
            try:
                fcntl.ioctl(self.fd, KVM_RUN, 0)
            except _Alarm as exc:
                raise GuestTimeout(
                    f"the guest ran for more than {timeout} s without an exit; its code loops"
                ) from exc
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    raise GuestTimeout("KVM_RUN was interrupted by a signal") from exc
                raise HostKvmError(f"KVM_RUN failed: {os.strerror(exc.errno or 0)}") from exc
        run = self.run_struct
        reason = int(run.exit_reason)
        if reason == KVM_EXIT_IO:
            io = run.exit.io
            value = self._run_map[io.offset] if io.direction == 1 else 0
            return Exit(reason, port=int(io.port), value=value)
        if reason == KVM_EXIT_MMIO:
            mmio = run.exit.mmio
            value = int.from_bytes(bytes(mmio.data)[: mmio.len], "little")
            return Exit(
                reason, value=value, phys_addr=int(mmio.phys_addr), is_write=bool(mmio.is_write)
            )
        return Exit(reason)

    def close(self) -> None:
        """Unmap ``kvm_run`` and close the stats fd and the vCPU fd."""
        if self._stats_fd >= 0:
            os.close(self._stats_fd)
            self._stats_fd = -1
        if self.fd >= 0:
            del self.run_struct
            self._run_map.close()
            os.close(self.fd)
            self.fd = -1


class _Alarm(Exception):
    pass


def _raise_alarm(signum: int, frame: object) -> None:
    raise _Alarm


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Arm ``ITIMER_REAL`` for ``seconds`` in the main thread; restore the old handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGALRM, _raise_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
