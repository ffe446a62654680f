"""A seeded random driver: whatever the guest does to its tables, registers and memslots, the
shadow MMU answers only what the architecture allows.

Where ``test_mmu_property.py`` models a well-behaved guest OS (it flushes what the SDM requires
after each edit), this driver is a hostile one. It writes 1, 2, 4 or 8 bytes anywhere in its
page tables with values that point entries at data, at other tables (cycles, self-references,
tables reused at other levels), at unbacked and read-only memory, that set the PS bit or a
reserved bit, and it flushes only when the dice say so; it toggles CR0.WP, CR4.PGE/SMEP/SMAP,
EFER.NXE and paging itself, runs several vCPUs over shared tables and two address spaces,
creates, moves and deletes memslots, turns dirty logging on and off, zaps everything fast, and
runs under the smallest page budget KVM allows, so reclaim runs too.

The comparison allows exactly the stale translations x86 allows (SDM vol. 3 4.10.4): an access
may reach a gpa the guest's tables gave for that page, access kind and privilege at any time
since that vCPU last flushed it (INVLPG of the page, a CR3 load for non-global pages, a register
change, a memslot deletion or move, which KVM turns into a flush), or fault spuriously where such
a translation had fewer rights; otherwise it must equal the walker's answer on the current
tables. A gpa no memslot holds is an MMIO exit, a store to a read-only slot never changes it,
every store lands, the dirty log holds every gfn written since the last fetch, and the audit
passes throughout.

CI runs four seeds of 250 steps per mode. A long run is one command (README, "Testing"):

    KVMMU_DRIVER_SEEDS=50 KVMMU_DRIVER_STEPS=20000 .venv/bin/python -m pytest \
        tests/test_random_driver.py
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, replace

import pytest

from kvmmu.hw.guest import GuestPageTables
from kvmmu.hw.memory import MemslotFlag
from kvmmu.hw.walk import CpuState, GeneralProtection, PageFault, WalkResult, walk
from kvmmu.hw.x86 import Access, Cr0, Cr4, Efer, PagingMode, PfErr, Rflags
from kvmmu.kvm.audit import audit
from kvmmu.kvm.vcpu import Translation, Vcpu, Vm

MiB = 1 << 20
P, W, U, A, D, PS, G = 1, 2, 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
XD = 1 << 63

DATA_GPA = 0x100000  # the data frames the guest maps: 1 MiB .. 3 MiB
ROM_GFN, ROM_PAGES = 0x5000, 16  # a read-only slot at 80 MiB
EXTRA_GFN, EXTRA_PAGES = 0x6000, 16  # at 96 MiB, a slot the driver adds, moves and deletes
UNBACKED_GPA = 0x8000_0000  # no memslot, ever
SELFMAP = 0x7000_0000  # the table pool mapped here, supervisor, writable
KINDS = (Access.READ, Access.WRITE, Access.FETCH)

STEPS = int(os.environ.get("KVMMU_DRIVER_STEPS", "250"))
SEEDS = int(os.environ.get("KVMMU_DRIVER_SEEDS", "4"))


Answer = tuple[str, int, bool]  # ("gpa", gpa, global) or ("fault", error code, False)


def answer_of(result: WalkResult | PageFault | GeneralProtection) -> Answer:
    """The architectural answer of one walk, reduced to what a TLB could cache."""
    if isinstance(result, WalkResult):
        return ("gpa", result.gpa, bool(result.pte & G))
    if isinstance(result, PageFault):
        return ("fault", int(result.error_code), False)
    return ("gp", 0, False)


@dataclass
class Guest:
    """The hostile guest: two address spaces over one table pool, several vCPUs."""

    rng: random.Random
    mode: PagingMode
    vm: Vm
    spaces: list[GuestPageTables]
    vcpus: list[Vcpu]
    gvas: list[int]
    pool: range
    protected: set[tuple[int, int]]  # (table gfn, index) of the self-map path: never written
    original: dict[tuple[int, int], int]  # every table entry as the guest OS first wrote it
    paged_cpu: list[CpuState] = field(default_factory=list)
    # what each vCPU may still see for (gva, kind, cpl): answers since its last flush
    seen: list[dict[tuple[int, Access, int], set[Answer]]] = field(default_factory=list)
    written: set[int] = field(default_factory=set)  # gfns stored to since the last log fetch
    # XD bits in the tables, or EFER.NXE toggles: not both. KVM shares shadow pages across
    # EFER.NXE (shadow roles force efer_nx), so an XD page mapped while NXE was on stays
    # usable after NXE goes off, where the SDM has a reserved-bit fault (see the README).
    xd: bool = False
    extra_slot: int | None = None
    steps: int = 0

    # -- the reference ----------------------------------------------------------------------

    def reference(self, vcpu: Vcpu, gva: int, kind: Access, cpl: int) -> Answer:
        cpu = replace(vcpu.cpu, cpl=cpl)
        return answer_of(walk(self.vm.memory, cpu, gva, kind, set_ad=False))

    def sample(self) -> None:
        """Record what every vCPU's tables answer now: a TLB may cache any of it."""
        for n, vcpu in enumerate(self.vcpus):
            for gva in self.gvas:
                for kind in KINDS:
                    for cpl in (0, 3):
                        answer = self.reference(vcpu, gva, kind, cpl)
                        self.seen[n].setdefault((gva, kind, cpl), set()).add(answer)

    def flush(self, n: int, *, gva: int | None = None, keep_global: bool = False) -> None:
        """vCPU ``n`` flushed one page, or everything (but its global entries)."""
        for key in list(self.seen[n]):
            if gva is not None and key[0] >> 12 != gva >> 12:
                continue
            kept = {a for a in self.seen[n][key] if keep_global and a[2]}
            self.seen[n][key] = kept
        self.sample_one(n)

    def sample_one(self, n: int) -> None:
        vcpu = self.vcpus[n]
        for gva in self.gvas:
            for kind in KINDS:
                for cpl in (0, 3):
                    answer = self.reference(vcpu, gva, kind, cpl)
                    self.seen[n].setdefault((gva, kind, cpl), set()).add(answer)

    # -- checks -----------------------------------------------------------------------------

    def check_access(self, n: int, gva: int, kind: Access, cpl: int) -> Translation | None:
        vcpu = self.vcpus[n]
        now = self.reference(vcpu, gva, kind, cpl)
        got = vcpu.translate(gva, kind, cpl)
        allowed = self.seen[n].get((gva, kind, cpl), set()) | {now}
        where = f"seed step {self.steps}: vCPU {n} {kind.value} {gva:#x} at CPL {cpl}"
        if isinstance(got, Translation):
            stale_ok = {a[1] for a in allowed if a[0] == "gpa"}
            assert got.gpa in stale_ok, f"{where}: reached {got.gpa:#x}, allowed {allowed}"
            slot = self.vm.memory.slots.find(got.gpa >> 12)
            if got.mmio:
                assert slot is None or (kind is Access.WRITE and slot.readonly), where
            else:
                assert slot is not None, f"{where}: {got.gpa:#x} has no memslot but no MMIO exit"
            return got
        if isinstance(got, PageFault):
            code = int(got.error_code)
            spurious = {a[1] for a in allowed if a[0] == "fault" and a[1] & PfErr.PRESENT}
            assert now == ("fault", code, False) or code in spurious, (
                f"{where}: fault {code:#x}, the walker says {now}"
            )
            return None
        assert now[0] == "gp", f"{where}: #GP, the walker says {now}"
        return None

    def check_store(self, n: int, gva: int, value: int, size: int, cpl: int) -> None:
        t = self.check_access(n, gva, Access.WRITE, cpl)
        if t is None:
            return
        vcpu = self.vcpus[n]
        gpa = t.gpa
        slot = self.vm.memory.slots.find(gpa >> 12)
        before = self.vm.memory.read(gpa & ~7) if slot is not None else None
        result = vcpu.write(gva, value, size, cpl)
        if result is not None:  # the TLB moved under us: a fault now is checked as an access
            return
        if t.mmio:
            if slot is not None:  # a read-only slot keeps its bytes
                assert self.vm.memory.read(gpa & ~7) == before
            return
        mask = (1 << (8 * size)) - 1
        assert self.vm.memory.read(gpa, size) == value & mask, f"step {self.steps}: store lost"
        self.written.add(gpa >> 12)
        self.sample()

    def check_dirty_log(self) -> None:
        slot = self.vm.memory.slots.find(DATA_GPA >> 12)
        assert slot is not None
        if not slot.dirty_logging:
            return
        logged = set(self.vm.get_dirty_log(slot.slot_id))
        missing = {g for g in self.written if slot.contains(g)} - logged
        assert not missing, f"step {self.steps}: written gfns missing from the dirty log: {missing}"
        self.written.clear()

    # -- operations -------------------------------------------------------------------------

    def entry_size(self) -> int:
        return self.spaces[0].spec.entry_size

    def random_value(self) -> int:
        r = self.rng
        flags = P | r.choice([0, W]) | r.choice([0, U]) | r.choice([0, A, A | D]) | r.choice([0, G])
        kind = r.randrange(9)
        if kind == 0:
            target = DATA_GPA + r.randrange(512) * 0x1000
        elif kind == 1:
            target = r.choice(self.pool) << 12  # cycles, self-references, reuse at other levels
        elif kind == 2:
            target = UNBACKED_GPA + r.randrange(16) * 0x1000
        elif kind == 3:
            target = (ROM_GFN + r.randrange(ROM_PAGES)) << 12
        elif kind == 4:
            target, flags = DATA_GPA & ~0x1FFFFF, flags | PS  # a large page
        elif kind == 5:
            target = (EXTRA_GFN + r.randrange(EXTRA_PAGES)) << 12
        elif kind == 6:
            target, flags = DATA_GPA, flags | (1 << 40 if self.entry_size() == 8 else PS | 1 << 21)
        elif kind == 7:
            return r.choice([0, 0x600, 0xFFE])  # not present, with software bits
        else:
            target = DATA_GPA + r.randrange(16) * 0x1000
        value = target | flags
        if self.xd and self.entry_size() == 8 and r.random() < 0.2:
            value |= XD
        return value & ((1 << (8 * self.entry_size())) - 1)

    def pick_entry(self) -> tuple[int, int, int] | None:
        """An entry to write: mostly one on a data page's path (the leaf most often), now and
        then any entry of the pool; never one of the self-map's own. (gfn, index, original)."""
        r = self.rng
        esize = self.entry_size()
        if r.random() < 0.8:
            space = r.choice(self.spaces)
            cpu = replace(space.cpu_regs, cpl=0)
            result = walk(self.vm.memory, cpu, r.choice(self.gvas[:7]), Access.READ, set_ad=False)
            trace = result.trace if isinstance(result, WalkResult) else result.steps
            if trace:
                step_ = trace[-1] if r.random() < 0.6 else r.choice(trace)
                gfn, index = step_.entry_gpa >> 12, (step_.entry_gpa & 0xFFF) // esize
                if (gfn, index) not in self.protected and gfn in self.pool:
                    return gfn, index, self.original.get((gfn, index), 0)
        for _ in range(20):
            gfn = r.choice(self.pool)
            index = r.randrange(4096 // esize)
            if (gfn, index) not in self.protected:
                return gfn, index, self.original.get((gfn, index), 0)
        return None

    def op_table_write(self) -> None:
        r = self.rng
        picked = self.pick_entry()
        if picked is None:
            return
        gfn, index, original = picked
        esize = self.entry_size()
        size = esize if r.random() < 0.6 else r.choice([s for s in (1, 2, 4, 8) if s <= esize])
        offset = r.randrange(0, esize, size)
        roll = r.random()
        if roll < 0.4 and original:
            whole = original  # heal: the guest puts the entry back
        elif roll < 0.75 and original:
            whole = original ^ r.choice([W, U, A | D, G, P, XD if esize == 8 and self.xd else W])
        else:
            whole = self.random_value()
        value = (whole >> (8 * offset)) & ((1 << (8 * size)) - 1)
        gva = SELFMAP + ((gfn - self.pool.start) << 12) + index * esize + offset
        self.check_store(r.randrange(len(self.vcpus)), gva, value, size, 0)

    def op_repoint(self) -> None:
        """The case stale translations come from: use a page, re-point its PTE at another frame
        (an unsync leaf table takes the store without an exit), use the page again."""
        r = self.rng
        n = r.randrange(len(self.vcpus))
        vcpu = self.vcpus[n]
        gva = r.choice(self.gvas[:4])
        self.check_access(n, gva, Access.READ, 3)
        result = walk(self.vm.memory, vcpu.cpu, gva, Access.READ, set_ad=False)
        if not isinstance(result, WalkResult) or result.level != 1:
            return
        entry_gpa = result.trace[-1].entry_gpa
        if entry_gpa >> 12 not in self.pool:
            return
        esize = self.entry_size()
        frame = DATA_GPA + r.randrange(512) * 0x1000
        new = (result.pte & 0xFFF) | frame | (result.pte & XD if esize == 8 else 0)
        table_gva = SELFMAP + ((entry_gpa >> 12) - self.pool.start << 12) + (entry_gpa & 0xFFF)
        self.check_store(n, table_gva, new, esize, 0)
        self.check_access(n, gva, r.choice(KINDS), r.choice((0, 3)))
        roll = r.random()
        if roll < 0.5:  # the guest flushes the page as it must: now only the new frame
            vcpu.invlpg(gva)
            self.flush(n, gva=gva)
        elif roll < 0.75:  # or reloads CR3 (the same address space or the other)
            self.op_cr3(n)
        self.check_access(n, gva, r.choice(KINDS), r.choice((0, 3)))

    def op_access(self) -> None:
        r = self.rng
        n = r.randrange(len(self.vcpus))
        gva = r.choice(self.gvas) + r.randrange(0, 0x1000, 8)
        gva &= ~0xFFF if gva & 0xFFF > 0xFF8 else ~0
        kind, cpl = r.choice(KINDS), r.choice((0, 3))
        if kind is Access.WRITE and r.random() < 0.5:
            self.check_store(n, r.choice(self.gvas), r.getrandbits(64), 8, cpl)
        else:
            self.check_access(n, r.choice(self.gvas), kind, cpl)

    def op_invlpg(self) -> None:
        n = self.rng.randrange(len(self.vcpus))
        gva = self.rng.choice(self.gvas)
        self.vcpus[n].invlpg(gva)
        self.flush(n, gva=gva)

    def op_cr3(self, n: int | None = None) -> None:
        n = self.rng.randrange(len(self.vcpus)) if n is None else n
        vcpu = self.vcpus[n]
        if vcpu.mode is PagingMode.NONE:
            return
        space = self.rng.choice(self.spaces)
        if vcpu.set_cr3(space.cr3) is None:
            self.flush(n, keep_global=bool(vcpu.cpu.cr4 & Cr4.PGE))

    def op_registers(self) -> None:
        """A register change on every vCPU at once, as an OS keeps its CPUs alike."""
        r = self.rng
        bits = ["wp", "pge", "smep", "smap", "ac"] + ([] if self.xd else ["nxe"])
        bit = r.choice(bits)
        paging = bool(self.vcpus[0].cpu.cr0 & Cr0.PG)
        toggle_paging = not paging or r.random() < 0.2
        for n, vcpu in enumerate(self.vcpus):
            cpu = vcpu.cpu
            if toggle_paging and cpu.cr0 & Cr0.PG:
                self.paged_cpu[n] = cpu  # paging off, and later on again with these registers
                efer = cpu.efer & ~(Efer.LMA | Efer.LME)
                change = vcpu.set_registers(cr0=cpu.cr0 & ~Cr0.PG, efer=efer)
            elif toggle_paging:
                old = self.paged_cpu[n]
                change = vcpu.set_registers(cr0=old.cr0, cr4=old.cr4, efer=old.efer, cr3=old.cr3)
            elif bit == "ac":
                vcpu.set_ac(not cpu.rflags & Rflags.AC)
                change = None
            elif bit == "wp":
                change = vcpu.set_registers(cr0=cpu.cr0 ^ Cr0.WP)
            elif bit == "nxe":
                change = vcpu.set_registers(efer=cpu.efer ^ Efer.NXE)
            else:
                flag = {"pge": Cr4.PGE, "smep": Cr4.SMEP, "smap": Cr4.SMAP}[bit]
                change = vcpu.set_registers(cr4=cpu.cr4 ^ flag)
            # only a PAE guest can #GP here: a PDPTE it broke is checked when CR3 is loaded
            assert change is None or self.mode is PagingMode.PAE, f"step {self.steps}: {change}"
        if bit == "ac" and not toggle_paging:
            return  # STAC/CLAC change no translation: nothing is flushed (SDM 4.10.4.1)
        for n in range(len(self.vcpus)):
            self.flush(n)  # KVM resets the MMU context on each of these, and flushes

    def op_memslots(self) -> None:
        r = self.rng
        vm = self.vm
        choice = r.randrange(4)
        if choice == 0 and self.extra_slot is None:
            self.extra_slot = vm.add_memslot(EXTRA_GFN, EXTRA_PAGES).slot_id
        elif choice == 1 and self.extra_slot is not None:
            vm.delete_memslot(self.extra_slot)
            self.extra_slot = None
            for n in range(len(self.vcpus)):
                self.flush(n)
        elif choice == 2:
            data = vm.memory.slots.find(DATA_GPA >> 12)
            assert data is not None
            self.check_dirty_log()
            vm.set_memslot_flags(data.slot_id, data.flags ^ MemslotFlag.LOG_DIRTY_PAGES)
            self.written.clear()
        else:
            self.check_dirty_log()

    def op_zap_all_fast(self) -> None:
        self.vm.mmu.zap_all_fast()

    def step(self) -> None:
        self.steps += 1
        ops = [
            (self.op_access, 40),
            (self.op_table_write, 20),
            (self.op_repoint, 8),
            (self.op_invlpg, 8),
            (self.op_cr3, 6),
            (self.op_registers, 6),
            (self.op_memslots, 4),
            (self.op_zap_all_fast, 1),
        ]
        op = self.rng.choices([o for o, _ in ops], weights=[w for _, w in ops])[0]
        op()
        if self.steps % 10 == 0:
            audit(self.vm)


def make_guest(seed: int, mode: PagingMode, tdp: bool) -> Guest:
    rng = random.Random(seed)
    vm = Vm(
        64 * MiB,
        tdp=tdp,
        n_max_mmu_pages=64 if seed % 2 else None,  # odd seeds: KVM's smallest budget
        allow_unsync=seed % 4 != 3,
    )
    vm.add_memslot(ROM_GFN, ROM_PAGES, MemslotFlag.READONLY)
    pool = range(0x1000, 0x1000 + 48)  # 16 MiB: every table of both address spaces
    halves = (range(pool.start, pool.start + 24), range(pool.start + 24, pool.stop))
    spaces = [GuestPageTables(vm.memory, mode, pge=True, table_gfns=half) for half in halves]
    gvas = [0x40_0000 + k * 0x1000 for k in range(4)] + [0x60_0000, 0x60_1000, 0x80_0000]
    for space in spaces:
        space.map(0x40_0000, DATA_GPA, length=0x4000, writable=True, user=True)
        space.map(0x60_0000, DATA_GPA, length=0x200000, writable=True, user=True)
        space.map(0x80_0000, UNBACKED_GPA, writable=True, user=True)
        space.map(0x80_1000, ROM_GFN << 12, writable=True, user=True)
        space.map(SELFMAP, pool.start << 12, length=len(pool) << 12, writable=True)
    gvas += [0x80_1000, SELFMAP, SELFMAP + 0x1000, SELFMAP + (24 << 12)]
    protected = set()  # the self-map's own entries: the driver keeps a way to its tables
    for space in spaces:
        space.cpu_regs = space.cpu()  # type: ignore[attr-defined]
        cpu = space.cpu_regs  # type: ignore[attr-defined]
        for page in range(len(pool)):
            result = walk(vm.memory, cpu, SELFMAP + (page << 12), Access.READ, set_ad=False)
            assert isinstance(result, WalkResult)
            for step_ in result.trace:
                index = (step_.entry_gpa & 0xFFF) // space.spec.entry_size
                protected.add((step_.entry_gpa >> 12, index))
    vcpus = [vm.create_vcpu(spaces[k % 2].cpu()) for k in range(2)]
    esize = spaces[0].spec.entry_size
    original = {
        (gfn, i): vm.memory.read((gfn << 12) + i * esize, esize)
        for gfn in pool
        for i in range(4096 // esize)
        if vm.memory.read((gfn << 12) + i * esize, esize)
    }
    guest = Guest(rng, mode, vm, spaces, vcpus, gvas, pool, protected, original)
    guest.xd = seed % 4 in (1, 2)
    guest.paged_cpu = [v.cpu for v in vcpus]
    guest.seen = [{} for _ in vcpus]
    guest.sample()
    return guest


@pytest.mark.parametrize(
    ("mode", "tdp"),
    [
        (PagingMode.LEVEL4, False),
        (PagingMode.PAE, False),
        (PagingMode.BITS32, False),
        (PagingMode.LEVEL4, True),
    ],
    ids=["4-level", "pae", "32-bit", "4-level-tdp"],
)
@pytest.mark.parametrize("seed", range(SEEDS))
def test_a_hostile_guest_sees_only_what_x86_allows(mode: PagingMode, tdp: bool, seed: int) -> None:
    guest = make_guest(seed, mode, tdp)
    for _ in range(STEPS):
        guest.step()
    audit(guest.vm)
    guest.check_dirty_log()


def test_the_driver_catches_an_mmu_that_forgets_to_sync_on_invlpg(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not vacuous: with ``invlpg`` no longer syncing unsync pages, a stale translation
    outlives the guest's flush and the driver says so."""
    import kvmmu.kvm.vcpu as vcpu_module

    monkeypatch.setattr(vcpu_module, "invlpg_sync", lambda vcpu, gva: None)
    guest = make_guest(0, PagingMode.LEVEL4, False)
    with pytest.raises(AssertionError, match="reached"):
        for _ in range(2000):
            guest.step()
