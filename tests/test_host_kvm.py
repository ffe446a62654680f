"""kvmmu.host.kvm: the VMM over /dev/kvm (``include/uapi/linux/kvm.h``, ``api.rst``).

Tests that need a usable /dev/kvm skip with the reason :func:`kvm_usable` gives (the fix to
apply); the error-path tests run everywhere.
"""

from __future__ import annotations

import ctypes
import os
import struct
from pathlib import Path

import pytest
from iced_x86 import Code, Decoder

from kvmmu.errors import KvmmuError
from kvmmu.host import kernel as K
from kvmmu.host.asm import Asm, AsmError
from kvmmu.host.kvm import (
    KVM_EXIT_IO,
    GuestTimeout,
    HostKvmError,
    HostKvmUnavailable,
    Kvm,
    KvmDirtyLog,
    KvmRegs,
    KvmSegment,
    KvmSregs,
    KvmTranslation,
    KvmUserspaceMemoryRegion,
    kvm_usable,
    open_kvm_fd,
    read_stats_descriptors,
)
from kvmmu.host.program import DATA_GVA, build_image, program, user_page

USABLE, WHY = kvm_usable()
needs_kvm = pytest.mark.skipif(not USABLE, reason=f"no usable /dev/kvm: {WHY}")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_uapi_structures_have_the_kernel_sizes() -> None:
    # include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h, x86-64
    sizes = {
        KvmUserspaceMemoryRegion: 32,
        KvmDirtyLog: 16,
        KvmRegs: 144,
        KvmSegment: 24,
        KvmSregs: 312,
        KvmTranslation: 24,
    }
    for cstruct, size in sizes.items():
        assert ctypes.sizeof(cstruct) == size, cstruct.__name__


def test_a_missing_device_is_a_typed_error_that_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(HostKvmUnavailable, match=r"does not exist.*modprobe"):
        open_kvm_fd(str(tmp_path / "kvm"))
    ok, why = kvm_usable(str(tmp_path / "kvm"))
    assert not ok and "does not exist" in why
    assert issubclass(HostKvmUnavailable, KvmmuError)


def test_a_refused_device_tells_the_user_to_join_the_kvm_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(path: str, flags: int) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(HostKvmUnavailable, match="add yourself to the kvm group"):
        Kvm()


@needs_kvm
def test_api_version_and_capabilities() -> None:
    with Kvm() as kvm:
        assert kvm.api_version == 12
        assert kvm.vcpu_mmap_size() >= 4096
        assert kvm.supported_cpuid().nent > 0


@needs_kvm
def test_binary_stats_have_the_kernel_names() -> None:
    with Kvm() as kvm, kvm.create_vm() as vm:
        vcpu = vm.create_vcpu()
        vm_stats, vcpu_stats = vm.stats(), vcpu.stats()
        ident, descriptors, _ = read_stats_descriptors(vm._stats_fd)
    assert ident.startswith("kvm-")
    assert {d.name for d in descriptors} == set(vm_stats.index)
    assert {"mmu_cache_miss", "mmu_pte_write", "mmu_unsync", "pages_4k"} <= set(vm_stats.index)
    assert {"pf_fixed", "pf_guest", "pf_taken", "exits", "insn_emulation"} <= set(vcpu_stats.index)
    assert (vcpu_stats == 0).all(), "a vCPU that never ran has counted nothing"


@needs_kvm
def test_a_guest_boots_to_cpl3_translates_and_closes_every_fd() -> None:
    image = build_image(program("touch"))
    before = open_fds()
    with Kvm() as kvm, kvm.create_vm() as vm:
        slot = vm.set_user_memory_region(0, 0, K.RAM_SIZE)
        slot.memory[:] = image.memory.read_bytes(0, K.RAM_SIZE)
        vcpu = vm.create_vcpu()
        vcpu.set_sregs(K.long_mode_sregs(vcpu.get_sregs(), image.spaces[0].cr3))
        sregs = vcpu.get_sregs()
        assert sregs.efer & K.EFER_LMA and sregs.cr0 & K.CR0_PG
        # KVM_TRANSLATE walks the guest's tables: the data page, the direct map, a hole
        assert vcpu.translate(DATA_GVA + 0x1234).physical_address == user_page(1) + 0x234
        assert vcpu.translate(K.kva(0x5000)).physical_address == 0x5000
        assert vcpu.translate(0x7FFF_0000).valid == 0
        entry = K.kva(K.KERNEL_CODE + K.ENTRY_OFFSET)
        vcpu.set_regs(KvmRegs(rip=entry, rsp=K.kva(K.KERNEL_STACK_TOP), rflags=2))
        exit_ = vcpu.run()
        assert exit_.reason == KVM_EXIT_IO and exit_.port == K.HOST_PORT
        assert exit_.value == K.HOST_EXIT or exit_.value == K.HOST_CALL
        assert vcpu.stats()["pf_fixed"] > 0, "CPL-3 code ran on the shadow tables"
    assert open_fds() == before


@needs_kvm
def test_a_looping_guest_is_stopped_by_the_timer() -> None:
    with Kvm() as kvm, kvm.create_vm() as vm:
        image = build_image(program("touch"))
        slot = vm.set_user_memory_region(0, 0, K.RAM_SIZE)
        slot.memory[:] = image.memory.read_bytes(0, K.RAM_SIZE)
        slot.memory[0x7000:0x7002] = b"\xeb\xfe"  # jmp $
        vcpu = vm.create_vcpu()
        vcpu.set_sregs(K.long_mode_sregs(vcpu.get_sregs(), image.spaces[0].cr3))
        vcpu.set_regs(KvmRegs(rip=K.kva(0x7000), rsp=K.kva(K.KERNEL_STACK_TOP), rflags=2))
        with pytest.raises(GuestTimeout, match=r"more than 0\.2 s"):
            vcpu.run(timeout=0.2)


@needs_kvm
def test_memslot_errors_are_typed() -> None:
    with Kvm() as kvm, kvm.create_vm() as vm:
        vm.set_user_memory_region(0, 0, 0x10000)
        with pytest.raises(HostKvmError, match="exists"):
            vm.set_user_memory_region(0, 0, 0x10000)
        with pytest.raises(HostKvmError, match="KVM_SET_USER_MEM"):
            vm.set_user_memory_region(1, 0x8000, 0x10000)  # overlaps slot 0
        with pytest.raises(HostKvmError, match="not inside one memslot"):
            vm.read(0x20000, 8)


def test_labels_must_be_bound_once() -> None:
    a = Asm()
    label = a.label()
    a.bind(label)
    with pytest.raises(AsmError, match="bound twice"):
        a.bind(label)
    b = Asm()
    b.op(Code.HLT)
    b.bind(b.label())
    with pytest.raises(AsmError, match="after the last instruction"):
        b.encode(0x1000)


def test_branches_to_labels_are_resolved_where_the_code_is_placed() -> None:
    a = Asm()
    target = a.label()
    a.jmp(Code.JMP_REL32_64, target)
    a.op(Code.UD2)
    a.bind(target)
    a.op(Code.HLT)
    for rip in (0x1000, K.kva(0x1000)):
        decoded = list(Decoder(64, a.encode(rip), ip=rip))
        assert decoded[0].near_branch_target == decoded[2].ip
        assert decoded[2].code == Code.HLT


def test_the_kernel_image_fits_its_slots_and_every_gate_points_into_it() -> None:
    image = K.kernel_image()
    idt = struct.unpack("<64Q", image[K.IDT])
    for vector in range(32):
        low, high = idt[2 * vector], idt[2 * vector + 1]
        handler = (low & 0xFFFF) | ((low >> 48) & 0xFFFF) << 16 | high << 32
        assert (low >> 16) & 0xFFFF == K.KERNEL_CS and (low >> 40) & 0xFF == 0x8E
        gpa = handler - K.KERNEL_BASE
        assert any(start <= gpa < start + len(code) for start, code in image.items()), vector
    assert struct.unpack_from("<Q", image[K.TSS], 4)[0] == K.kva(K.KERNEL_STACK_TOP)


@needs_kvm
def test_several_vcpus_each_have_their_own_run_page_and_stats() -> None:
    image = build_image(program("touch"))
    with Kvm() as kvm, kvm.create_vm() as vm:
        slot = vm.set_user_memory_region(0, 0, K.RAM_SIZE)
        slot.memory[:] = image.memory.read_bytes(0, K.RAM_SIZE)
        vcpus = [vm.create_vcpu() for _ in range(2)]
        assert [v.vcpu_id for v in vcpus] == [0, 1]
        runner = vcpus[1]
        runner.set_sregs(K.long_mode_sregs(runner.get_sregs(), image.spaces[0].cr3))
        entry = K.kva(K.KERNEL_CODE + K.ENTRY_OFFSET)
        runner.set_regs(KvmRegs(rip=entry, rsp=K.kva(K.KERNEL_STACK_TOP), rflags=2))
        assert runner.run().reason == KVM_EXIT_IO
        assert runner.stats()["pf_fixed"] > 0
        assert vcpus[0].stats()["exits"] == 0, "the other vCPU never ran"
