"""scripts/check-arm64 (the emulated Raspberry Pi OS check) outside its long run: the script parses,
explains itself, and picks the Debian mirror entries for the arm64 root from apt sources the way apt
would read them. The run itself is its own command (docs/raspberry-pi.md); it needs root and minutes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check-arm64"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *args], capture_output=True, text=True, timeout=30, env=env, check=False)


def test_script_parses_and_documents_its_options() -> None:
    assert run("-n", str(SCRIPT)).returncode == 0
    helped = run(str(SCRIPT), "--help")
    assert helped.returncode == 0, helped.stderr
    for option in ("--fresh", "--model", "--skip-service", "--print-sources"):
        assert option in helped.stdout
    wrong = run(str(SCRIPT), "--frsh")
    assert wrong.returncode == 2 and "unknown option --frsh" in wrong.stderr


def test_root_gets_the_hosts_debian_bookworm_entries_only(tmp_path: Path) -> None:
    """deb822 and one-line sources: bookworm suites for arm64, keyrings kept; other releases,
    amd64-only vendors, disabled stanzas, deb-src and comments left out."""
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb deb-src\n"
        "# a comment\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates trixie\n"
        "Components: main contrib\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "Enabled: no\n")
    (d / "vendor.sources").write_text(
        "Types: deb\nURIs: https://vendor.example/node\nSuites: bookworm\nComponents: main\n"
        "Architectures: amd64\n")
    (d / "extra.list").write_text(
        "deb http://other.example/debian bookworm-backports main\n"
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://other.example/debian bookworm main\n"
        "deb http://other.example/debian bullseye main\n"
        "deb [arch=amd64] http://amd64.example/debian bookworm main\n"
        "  deb [arch=arm64,armhf] http://arm.example/debian bookworm main\n")
    (d / "old.list.disabled").write_text("deb http://disabled.example/debian bookworm main\n")
    out = run(str(SCRIPT), "--print-sources", env={"PATH": "/usr/bin:/bin", "CHECK_ARM64_APT_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "deb http://other.example/debian bookworm-backports main",
        "deb [arch=arm64,armhf] http://arm.example/debian bookworm main",
        "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.example/debian bookworm main contrib",
        "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
        "http://mirror.example/debian bookworm-updates main contrib",
    ]
    empty = tmp_path / "empty"
    (empty / "sources.list.d").mkdir(parents=True)
    none = run(str(SCRIPT), "--print-sources", env={"PATH": "/usr/bin:/bin", "CHECK_ARM64_APT_DIR": str(empty)})
    assert none.returncode == 1 and "no Debian bookworm entry" in none.stderr
