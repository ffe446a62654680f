#!/usr/bin/env python3
"""Capture the page tables of a booted Linux x86-64 guest under QEMU (TCG).

This is the recipe behind ``kvmmu/data/linux-guest/`` (package data: it writes there, and that
folder is the only copy); see ``kvmmu/data/linux-guest/README.md``. It is not part of the test
run: it needs Debian packages the tests do not (``qemu-system-x86``, ``busybox-static``) and the
network to fetch a stock kernel with ``apt-get download``.

For every capture it boots a distribution kernel with a tiny busybox initramfs, waits until
init has started a busy-looping user process and a few sleeping ones, then stops the vCPU
over QMP (``stop`` / ``cont``) until QEMU reports CPL=3, and at that stop saves:

* the control registers QEMU reports (``info registers``: CR0, CR3, CR4, EFER, CPL),
* QEMU's own view of the tables: ``info tlb`` (every present leaf) and ``info mem``
  (ranges with their combined user/write rights),
* guest RAM (``pmemsave`` into a temporary file, deleted afterwards), from which only the
  page-table pages reachable from CR3 are kept.

With ``pti=on`` a process has two top-level tables (``arch/x86/mm/pti.c``): the user CR3
(bit 12 set) that the CPU uses at CPL=3, and the kernel CR3 that the entry code switches to
(``SWITCH_TO_KERNEL_CR3`` in ``arch/x86/entry/calling.h``). At the same stop the script loads
the kernel CR3 into the vCPU through QEMU's gdbstub, asks ``info tlb`` / ``info mem`` again,
and restores the user CR3, so both views come from one consistent RAM image.

Run it from the repository top with the project's Python (it needs numpy):

    python scripts/capture_linux_guest.py            # every capture
    python scripts/capture_linux_guest.py --only x86_64-4level

Every process it starts is killed before it returns; the temporary directory (kernel,
initramfs, RAM image, sockets) is removed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import lzma
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "kvmmu" / "data" / "linux-guest"

PAGE_SIZE = 4096
ENTRIES = 512
PTE_PRESENT = 1 << 0
PTE_PS = 1 << 7
CR4_LA57 = 1 << 12
# arch/x86/include/asm/pgtable_types.h / processor-flags.h: with PTI the user half of a
# process's PGD pair sits at the odd 4 KiB page (PTI_USER_PGTABLE_BIT = PAGE_SHIFT), and
# with PCID the user ASID additionally has X86_CR3_PTI_PCID_USER_BIT (11) set.
PTI_USER_PGTABLE_BIT = 1 << 12
PTI_PCID_USER_BIT = 1 << 11
CR4_PCIDE = 1 << 17

READY_MARKER = "KVMMU-READY"
BOOT_TIMEOUT_S = 900.0
STOP_TRIES = 400


@dataclass(frozen=True)
class CaptureSpec:
    """One guest configuration to boot and capture."""

    name: str
    description: str
    cpu: str
    memory_mib: int
    append: str
    levels: int
    pti: bool


BASE_APPEND = "console=ttyS0 nokaslr rdinit=/init panic=-1 no_timer_check"

CAPTURES: tuple[CaptureSpec, ...] = (
    CaptureSpec(
        name="x86_64-4level",
        description=(
            "4-level paging, no PTI, 1 GiB pages offered (pdpe1gb) and 2304 MiB of RAM so "
            "that the direct map holds a 1 GiB leaf; CR3 of a busy-looping user process"
        ),
        cpu="qemu64,+pdpe1gb,phys-bits=40",
        memory_mib=2304,
        append=BASE_APPEND + " pti=off",
        levels=4,
        pti=False,
    ),
    CaptureSpec(
        name="x86_64-4level-pti",
        description=(
            "4-level paging with page-table isolation forced (pti=on): the user CR3 of a "
            "busy-looping user process and the kernel CR3 of the same process"
        ),
        cpu="qemu64,phys-bits=40",
        memory_mib=256,
        append=BASE_APPEND + " pti=on",
        levels=4,
        pti=True,
    ),
    CaptureSpec(
        name="x86_64-5level",
        description=(
            "5-level paging (CPU offers LA57, kernel enables CR4.LA57), no PTI; CR3 of a "
            "busy-looping user process"
        ),
        cpu="qemu64,+la57,+pdpe1gb,phys-bits=40",
        memory_mib=256,
        append=BASE_APPEND + " pti=off",
        levels=5,
        pti=False,
    ),
)

# The guest's init: busybox sh, a few sleepers, one process that never leaves user mode.
INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "KVMMU-UNAME $(uname -a)"
echo "KVMMU-CMDLINE $(cat /proc/cmdline)"
grep -m1 'address sizes' /proc/cpuinfo | sed 's/^/KVMMU-CPUINFO /'
grep -m1 '^flags' /proc/cpuinfo | sed 's/^/KVMMU-CPUINFO /'
sleep 100001 &
sleep 100002 &
sleep 100003 &
sh -c 'while :; do :; done' &
busy=$!
sleep 1
echo "KVMMU-BUSY-PID $busy"
ps -o pid,user,args
echo "KVMMU-BUSY-MAPS begin"
cat /proc/$busy/maps
echo "KVMMU-BUSY-MAPS end"
echo {READY_MARKER}
while :; do sleep 3600; done
"""


def log(message: str) -> None:
    print(f"[capture] {message}", flush=True)


# --------------------------------------------------------------------------------------
# Inputs: the kernel image and the initramfs.


def fetch_kernel(workdir: Path) -> tuple[Path, str]:
    """Download the current Debian kernel package (no root needed) and extract vmlinuz."""
    depends = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"Depends:\s*(linux-image-\S+)", depends)
    if match is None:
        raise SystemExit("apt-cache does not know linux-image-amd64: run apt-get update")
    package = match.group(1)
    subprocess.run(["apt-get", "download", package], cwd=workdir, check=True)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if not debs:
        raise SystemExit(f"apt-get download {package} produced no .deb")
    # Only boot/vmlinuz-* is needed: stream the data tarball and skip the modules.
    kernel: Path | None = None
    with subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE
    ) as unpack:
        assert unpack.stdout is not None
        with tarfile.open(fileobj=unpack.stdout, mode="r|") as tar:
            for member in tar:
                name = Path(member.name)
                if (
                    member.isfile()
                    and name.parent.name == "boot"
                    and name.name.startswith("vmlinuz-")
                ):
                    source = tar.extractfile(member)
                    assert source is not None
                    kernel = workdir / name.name
                    kernel.write_bytes(source.read())
        unpack.stdout.read()  # the archive's trailing padding, so dpkg-deb ends cleanly
    if unpack.returncode != 0 or kernel is None:
        raise SystemExit(f"{debs[0].name} holds no boot/vmlinuz-*")
    version = subprocess.run(
        ["dpkg-deb", "-f", str(debs[0]), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return kernel, f"{package} {version}"


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """Serialise (name, mode, data) entries in the kernel's initramfs format (newc cpio)."""
    out = bytearray()

    def pad4() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        encoded = name.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = [ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(encoded)
        pad4()
        out.extend(data)
        pad4()
    return bytes(out)


def build_initramfs(workdir: Path, busybox: Path) -> Path:
    """A cpio with /bin/busybox (static) and /init; everything else is made at boot."""
    entries = [
        ("bin", stat.S_IFDIR | 0o755, b""),
        ("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
        ("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
        ("init", stat.S_IFREG | 0o755, INIT_SCRIPT.encode()),
    ]
    path = workdir / "initramfs.cpio"
    path.write_bytes(cpio_newc(entries))
    return path


# --------------------------------------------------------------------------------------
# Talking to QEMU: QMP (JSON lines) and, for the kernel CR3, the gdbstub.


class Qmp:
    """A minimal QMP client over a unix socket."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock.settimeout(600)
        self.reader = self.sock.makefile("r", encoding="utf-8")
        json.loads(self.reader.readline())  # greeting
        self.command("qmp_capabilities")

    def command(self, name: str, **arguments: Any) -> Any:
        message: dict[str, Any] = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            line = self.reader.readline()
            if not line:
                raise ConnectionError(f"QMP closed while waiting for {name}")
            reply = json.loads(line)
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {name} failed: {reply['error']}")
            # anything else is an asynchronous event (STOP, RESUME, ...): skip it

    def hmp(self, command_line: str) -> str:
        result = self.command("human-monitor-command", **{"command-line": command_line})
        return str(result)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class GdbStub:
    """Just enough of the GDB remote protocol to read and write one register."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.buffer = b""
        # QEMU answers p/P only to a client that has read the target description
        # (gdbstub.c: "anything new enough to understand XML" may use them).
        self.request("qXfer:features:read:target.xml:0,fff")

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("gdbstub closed the connection")
        return chunk

    def request(self, payload: str) -> str:
        checksum = sum(payload.encode()) % 256
        self.sock.sendall(f"${payload}#{checksum:02x}".encode())
        while True:
            start = self.buffer.find(b"$")
            end = self.buffer.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.buffer) >= end + 3:
                body = self.buffer[start + 1 : end]
                self.buffer = self.buffer[end + 3 :]
                self.sock.sendall(b"+")
                return body.decode()
            self.buffer += self._recv()

    def control_register_numbers(self, registers: dict[str, int]) -> dict[str, int]:
        """Find the gdb register numbers of CR0, CR2, CR3 and CR4 by their values.

        QEMU 7.2's target description lists ss_base/ds_base/es_base registers that its
        stub does not number, so the XML cannot be trusted for the numbering; instead look
        for four consecutive registers holding CR0, CR2, CR3 and CR4 as `info registers`
        reports them.
        """
        wanted = [registers["cr0"], registers.get("cr2", 0), registers["cr3"], registers["cr4"]]
        values = [self.read_register(number) for number in range(64)]
        for first in range(16, 64 - 3):
            if values[first : first + 4] == wanted:
                return {"cr0": first, "cr2": first + 1, "cr3": first + 2, "cr4": first + 3}
        raise RuntimeError(f"no run of gdb registers holds {[hex(v) for v in wanted]}")

    def read_register(self, number: int) -> int:
        reply = self.request(f"p{number:x}")
        if not reply or reply.startswith("E"):
            return -1  # no such register
        return int.from_bytes(bytes.fromhex(reply), "little")

    def write_register(self, number: int, value: int) -> None:
        reply = self.request(f"P{number:x}={value.to_bytes(8, 'little').hex()}")
        if reply != "OK":
            raise RuntimeError(f"gdbstub refused to write register {number}: {reply!r}")

    def close(self) -> None:
        self.sock.close()


REGISTER_RE = re.compile(r"\b(CR0|CR2|CR3|CR4|EFER|RIP|RSP|RFL|CPL)=([0-9a-fA-F]+)")


def parse_registers(text: str) -> dict[str, int]:
    """CR0, CR2, CR3, CR4, EFER, RIP, RSP, RFLAGS (hex) and CPL (decimal) from `info registers`."""
    values: dict[str, int] = {}
    for key, value in REGISTER_RE.findall(text):
        values[key.lower()] = int(value, 10 if key == "CPL" else 16)
    missing = {"cr0", "cr3", "cr4", "efer", "cpl"} - values.keys()
    if missing:
        raise RuntimeError(f"info registers lacks {sorted(missing)}:\n{text}")
    return values


# --------------------------------------------------------------------------------------
# Keeping only the table pages: the walk every x86 CPU does, but visiting every entry.


def reachable_table_pages(
    ram: npt.NDArray[np.uint64], cr3: int, levels: int, maxphyaddr: int
) -> dict[int, npt.NDArray[np.uint64]]:
    """Every page-table page reachable from CR3, by gpa (SDM vol. 3, 4.5).

    A present entry at the top level, or a present entry without PS at the other levels
    above the last, points to the next table; PS at level 2 or 3 makes a large leaf.
    """
    address_mask = ((1 << maxphyaddr) - 1) & ~(PAGE_SIZE - 1)
    tables: dict[int, npt.NDArray[np.uint64]] = {}
    frontier = [(cr3 & address_mask, levels)]
    while frontier:
        gpa, level = frontier.pop()
        if gpa in tables:
            continue
        first = gpa // 8
        if first + ENTRIES > ram.size:
            raise RuntimeError(f"table at gpa {gpa:#x} lies outside the RAM image")
        page = np.array(ram[first : first + ENTRIES], dtype="<u8")
        tables[gpa] = page
        if level == 1:
            continue
        for raw in page.tolist():
            if not raw & PTE_PRESENT:
                continue
            if level in (2, 3) and raw & PTE_PS:
                continue
            frontier.append((raw & address_mask, level - 1))
    return tables


def guest_maxphyaddr(console: str) -> int:
    match = re.search(r"KVMMU-CPUINFO address sizes\s*:\s*(\d+) bits physical", console)
    if match is None:
        raise RuntimeError("the guest did not print its address sizes on the console")
    return int(match.group(1))


def guest_cpu_flags(console: str) -> list[str]:
    match = re.search(r"KVMMU-CPUINFO flags\s*:\s*(.*)", console)
    if match is None:
        raise RuntimeError("the guest did not print its CPU flags on the console")
    return match.group(1).split()


# --------------------------------------------------------------------------------------
# One capture.


def package_versions() -> dict[str, str]:
    packages = ["qemu-system-x86", "qemu-system-data", "busybox-static", "seabios"]
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", *packages],
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def wait_for_console(path: Path, marker: str, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if marker in text:
            return text
        if proc.poll() is not None:
            raise RuntimeError(f"QEMU exited with {proc.returncode} before {marker!r}")
        time.sleep(0.5)
    raise TimeoutError(f"no {marker!r} on the console within {BOOT_TIMEOUT_S:.0f} s")


def stop_in_user_mode(qmp: Qmp, spec: CaptureSpec) -> tuple[dict[str, int], str, int]:
    """stop/cont until the vCPU is stopped at CPL=3 (the busy process), as QEMU reports it."""
    for attempt in range(1, STOP_TRIES + 1):
        qmp.command("stop")
        text = qmp.hmp("info registers")
        registers = parse_registers(text)
        user_cr3 = not spec.pti or bool(registers["cr3"] & PTI_USER_PGTABLE_BIT)
        if registers["cpl"] == 3 and user_cr3:
            return registers, text, attempt
        qmp.command("cont")
        time.sleep(0.05 + 0.01 * (attempt % 7))
    raise RuntimeError(f"the vCPU was never caught at CPL=3 in {STOP_TRIES} stops")


def kernel_cr3_of(user_cr3: int, cr4: int) -> int:
    """The kernel CR3 paired with a PTI user CR3 (SWITCH_TO_KERNEL_CR3 clears these bits)."""
    mask = PTI_USER_PGTABLE_BIT | (PTI_PCID_USER_BIT if cr4 & CR4_PCIDE else 0)
    return user_cr3 & ~mask


def capture(spec: CaptureSpec, kernel: Path, initrd: Path, out_root: Path, tmp: Path) -> None:
    started = time.monotonic()
    work = tmp / spec.name
    work.mkdir()
    qmp_path = work / "qmp.sock"
    gdb_path = work / "gdb.sock"
    console_path = work / "console.log"
    ram_path = work / "ram.bin"
    ram_bytes = spec.memory_mib << 20
    command = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-machine",
        "pc",
        "-cpu",
        spec.cpu,
        "-smp",
        "1",
        "-m",
        f"{spec.memory_mib}M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        spec.append,
        "-serial",
        f"file:{console_path}",
        "-qmp",
        f"unix:{qmp_path},server=on,wait=off",
        "-gdb",
        f"unix:{gdb_path},server=on,wait=off",
    ]
    log(f"{spec.name}: booting")
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    qmp: Qmp | None = None
    finished = False
    try:
        qmp = Qmp(qmp_path)
        console = wait_for_console(console_path, READY_MARKER, proc)
        booted = time.monotonic()
        log(f"{spec.name}: guest ready after {booted - started:.1f} s")
        registers, registers_text, stops = stop_in_user_mode(qmp, spec)
        log(f"{spec.name}: CPL=3 after {stops} stop(s), CR3={registers['cr3']:#x}")
        views: dict[str, dict[str, Any]] = {
            "user": {
                "cr3": registers["cr3"],
                "info_tlb": qmp.hmp("info tlb"),
                "info_mem": qmp.hmp("info mem"),
                "info_registers": registers_text,
            }
        }
        if spec.pti:
            gdb = GdbStub(gdb_path)
            try:
                number = gdb.control_register_numbers(registers)["cr3"]
                kernel_cr3 = kernel_cr3_of(registers["cr3"], registers["cr4"])
                gdb.write_register(number, kernel_cr3)
                text = qmp.hmp("info registers")
                if parse_registers(text)["cr3"] != kernel_cr3:
                    raise RuntimeError("loading the kernel CR3 through the gdbstub failed")
                views["kernel"] = {
                    "cr3": kernel_cr3,
                    "info_tlb": qmp.hmp("info tlb"),
                    "info_mem": qmp.hmp("info mem"),
                    "info_registers": text,
                }
                gdb.write_register(number, registers["cr3"])
                if parse_registers(qmp.hmp("info registers"))["cr3"] != registers["cr3"]:
                    raise RuntimeError("restoring the user CR3 through the gdbstub failed")
            finally:
                gdb.close()
        qmp.command("pmemsave", val=0, size=ram_bytes, filename=str(ram_path))
        console = console_path.read_text(errors="replace")
        qmp.command("quit")
        finished = True
    finally:
        if qmp is not None:
            qmp.close()
        try:
            proc.wait(timeout=30 if finished else 0.1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    qemu_output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""

    maxphyaddr = guest_maxphyaddr(console)
    cpu_flags = guest_cpu_flags(console)
    cr4 = registers["cr4"]
    levels = 5 if cr4 & CR4_LA57 else 4
    if levels != spec.levels:
        raise RuntimeError(f"{spec.name}: the guest runs {levels}-level paging, not {spec.levels}")
    notes: list[str] = []
    for view in views.values():
        if levels == 5 and not view["info_mem"].strip():
            # QEMU 7.2's mem_info_la57 tests "present" the wrong way round at the PDPTE and
            # PDE levels and so prints nothing; fixed upstream by "i386/monitor: Fix page
            # table walking issue for LA57 enabled guest". An empty answer is no answer.
            view["info_mem"] = None
            notes.append(
                "info mem is not recorded: this QEMU's 5-level 'info mem' (mem_info_la57) "
                "inverts the present test at the PDPTE and PDE levels and prints nothing"
            )
    ram = np.memmap(ram_path, dtype="<u8", mode="r")
    tables: dict[int, npt.NDArray[np.uint64]] = {}
    for view in views.values():
        tables.update(reachable_table_pages(ram, view["cr3"], levels, maxphyaddr))
    del ram
    ram_path.unlink()
    elapsed = time.monotonic() - started

    out = out_root / spec.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    gpas = sorted(tables)
    np.savez_compressed(
        out / "tables.npz",
        gpa=np.array(gpas, dtype="<u8"),
        pages=np.stack([tables[g] for g in gpas]).astype("<u8"),
    )
    files: dict[str, dict[str, str]] = {}
    for view_name, view in views.items():
        files[view_name] = {}
        for key in ("info_tlb", "info_mem", "info_registers"):
            if view[key] is None:
                continue
            # xz: the ESPFIX area alone is 65536 lines of info tlb, all alike
            filename = f"{key.replace('_', '-')}-{view_name}.txt.xz"
            (out / filename).write_bytes(
                lzma.compress(view[key].encode(), preset=9 | lzma.PRESET_EXTREME)
            )
            files[view_name][key] = filename
    (out / "console.log").write_text(console)
    cmdline = re.search(r"KVMMU-CMDLINE (.*)", console)
    uname = re.search(r"KVMMU-UNAME (.*)", console)
    # the command as run, with this machine's temporary paths reduced to file names
    recorded_command = [
        re.sub(r"(file:|unix:)[^,]*/", r"\1", arg)
        for arg in ({str(kernel): kernel.name, str(initrd): initrd.name}.get(a, a) for a in command)
    ]
    metadata = {
        "name": spec.name,
        "description": spec.description,
        "paging_levels": levels,
        "pti": spec.pti,
        "maxphyaddr": maxphyaddr,
        "gbpages": "pdpe1gb" in cpu_flags,
        "guest_cpu_flags": " ".join(cpu_flags),
        "registers": {
            key: (f"{value:#x}" if key != "cpl" else value) for key, value in registers.items()
        },
        "views": {
            name: {"cr3": f"{view['cr3']:#x}", **files[name]} for name, view in views.items()
        },
        "table_pages": len(gpas),
        "ram_mib": spec.memory_mib,
        "qemu_command": recorded_command,
        "qemu_command_line": shlex.join(recorded_command),
        "kernel_command_line": cmdline.group(1).strip() if cmdline else spec.append,
        "kernel_uname": uname.group(1).strip() if uname else "",
        "stops_until_cpl3": stops,
        "seconds_to_boot": round(booted - started, 1),
        "seconds_total": round(elapsed, 1),
        "captured_on": datetime.date.today().isoformat(),
        "qemu_output": qemu_output.strip(),
        "notes": sorted(set(notes)),
    }
    (out / "capture.json").write_text(json.dumps(metadata, indent=2) + "\n")
    log(f"{spec.name}: {len(gpas)} table pages, {elapsed:.1f} s in all")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument(
        "--only", action="append", choices=[c.name for c in CAPTURES], help="capture subset"
    )
    parser.add_argument("--kernel", type=Path, help="a vmlinuz to use instead of downloading")
    parser.add_argument("--busybox", type=Path, default=Path("/bin/busybox"))
    args = parser.parse_args(argv)

    for tool in ("qemu-system-x86_64", "apt-get", "dpkg-deb", "dpkg-query"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install qemu-system-x86 busybox-static")
    if not args.busybox.exists():
        raise SystemExit(f"{args.busybox} not found: apt-get install busybox-static")

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kvmmu-capture-") as tmp_name:
        tmp = Path(tmp_name)
        if args.kernel is not None:
            kernel, kernel_package = args.kernel.resolve(), args.kernel.name
        else:
            kernel, kernel_package = fetch_kernel(tmp)
        initrd = build_initramfs(tmp, args.busybox)
        versions = {"kernel": kernel_package, **package_versions()}
        args.out.mkdir(parents=True, exist_ok=True)
        for spec in CAPTURES:
            if args.only and spec.name not in args.only:
                continue
            capture(spec, kernel, initrd, args.out, tmp)
            meta_path = args.out / spec.name / "capture.json"
            metadata = json.loads(meta_path.read_text())
            metadata["packages"] = versions
            metadata["host"] = {"python": sys.version.split()[0], "os": os.uname().sysname}
            meta_path.write_text(json.dumps(metadata, indent=2) + "\n")
    log(f"done in {time.monotonic() - started:.1f} s; rerun: {shlex.join(sys.argv)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
