# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""playbooks/verify.yml's two targets: `fixture` (Molecule and `make image`, against the fake EC2
network of molecule/fixture/) and `ec2` (a Packer build instance after its reboot, against the
real IMDS).

The ec2 target never runs here: it would read the metadata endpoint of whatever machine runs the
tests. Instead Ansible itself evaluates, on the controller alone (connection local, a Debian 12
host's facts made up): verify.yml's loop over a target's rounds and the `when` of its own
includes, the name of every include in verify/, and the tasks that decide something (the probes
each target defines, the IMDSv2 requests' arguments and verdict, the reboot and DNAT checks, the
probe image's removal, the Docker Hub refusal), with the registered results they read made up
and the programs they run (docker, iptables, systemctl, sleep) replaced by stubs on PATH. Those
plays run only the actions of SAFE (commands only with the stubs first on PATH): nothing is sent
to an address, and nothing reaches the host's firewall or Docker. ansible-playbook also checks
both targets' syntax and lists their plays.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import jinja2
import jinja2.meta
import pytest
import yaml
from conftest import ROOT
from ecs_imds_block.filter_plugins.ecs_imds_block import SETTINGS as FILTER_SETTINGS

PLAYBOOKS = ROOT / "playbooks"
VERIFY = PLAYBOOKS / "verify.yml"
VERIFY_DIR = PLAYBOOKS / "verify"
CHECKS = VERIFY_DIR / "checks"
SUITES = VERIFY_DIR / "suites"
PROBE = VERIFY_DIR / "probe"
FIXTURE_VARS = ROOT / "molecule" / "fixture" / "group_vars" / "all" / "fixture.yml"
INCLUDES = ("ansible.builtin.include_tasks", "ansible.builtin.import_tasks")
DNAT = "-A PREROUTING -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679"
TARGETS = ("fixture", "ec2")
# Task keys that hold a bare Jinja expression rather than a template.
CONDITIONS = ("when", "that", "until", "failed_when", "changed_when")


def load(path: Path):
    return yaml.safe_load(path.read_text())


def tasks_of(tasks) -> list[dict]:
    """Every task of a list, those inside block, rescue and always included."""
    found = []
    for task in tasks or []:
        found.append(task)
        for key in ("block", "rescue", "always"):
            found += tasks_of(task.get(key))
    return found


def verify_play() -> dict:
    (play,) = [play for play in load(VERIFY) if "verify_rounds" in play.get("vars", {})]
    return play


def task_named(tasks, name: str) -> dict:
    (task,) = [t for t in tasks_of(tasks) if t.get("name") == name]
    return task


def include_name(task: dict) -> str | None:
    for key in INCLUDES:
        if key in task:
            value = task[key]
            return value["file"] if isinstance(value, dict) else value
    return None


def variables(data, key: str | None = None) -> set[str]:
    """The variables the templates and conditions of a parsed YAML document read, as Jinja parses
    them (comments and plain text are not templates and do not count)."""
    found: set[str] = set()
    if isinstance(data, dict):
        for name, value in data.items():
            found |= variables(value, name)
    elif isinstance(data, list):
        for value in data:
            found |= variables(value, key)
    elif isinstance(data, str):
        source = f"{{{{ ({data}) }}}}" if key in CONDITIONS else data
        with warnings.catch_warnings():  # Jinja's lexer on a regex's \d in a string literal
            warnings.simplefilter("ignore", DeprecationWarning)
            found |= jinja2.meta.find_undeclared_variables(JINJA.parse(source))
    return found


class AnyName(dict):
    """Jinja's filters or tests, with a stand-in for each of Ansible's: the analysis only needs
    each name to exist, and never calls it."""

    def __contains__(self, name) -> bool:
        return True

    def get(self, name, default=None):
        return super().get(name) or (lambda *args, **kwargs: None)


# Autoescape only changes rendering, and these templates are only parsed.
JINJA = jinja2.Environment(autoescape=True)
JINJA.filters = AnyName(JINJA.filters)
JINJA.tests = AnyName(JINJA.tests)


# --- plays on the controller alone ----------------------------------------------------------------


def ansible_env() -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
        "ANSIBLE_NOCOLOR": "1",
    }


@dataclass
class Case:
    """How a play went for one case (one inventory host): whether every task passed, the values
    of the variables asked for, and the messages of the tasks that failed."""

    ok: bool
    values: dict | None
    failures: list[str]


# `fatal: [HOST]: FAILED! => {...}`: a failed task's result, in JSON.
FAILED = re.compile(r"^fatal: \[(?P<host>[^\]]+)\]: (FAILED|UNREACHABLE)! => ", re.MULTILINE)


class Controller:
    """Runs tasks in a play on the controller (connection local, no facts), once for each case.

    Each case is an inventory host whose variables are the case's, so that one ansible-playbook
    run evaluates every case. The play stands in a playbooks/ folder whose verify/ is a link to
    playbooks/verify, beside a link to roles/, so that `{{ playbook_dir }}/verify/...` and
    `{{ playbook_dir }}/../roles/...` name the project's files, as they do when verify.yml runs.
    `want` names the variables whose values come back, through a JSON file per case that a
    last task writes: a case without it failed. `stubs` is put first on the tasks' PATH, and
    STUB_CASE names the case for the stubs there.
    """

    def __init__(self, ansible_playbook: str, work: Path):
        self.ansible_playbook = ansible_playbook
        self.work = work
        self.runs = 0

    def run(self, tasks, *, cases=None, play_vars=None, stubs=None, want=()) -> dict[str, Case]:
        unsafe = actions(tasks) - SAFE - (STUBBED if stubs else set())
        assert not unsafe, f"{unsafe} would act on this machine"
        cases = cases or {"controller": {}}
        self.runs += 1
        folder = self.work / f"play{self.runs}" / "playbooks"
        folder.mkdir(parents=True)
        (folder / "verify").symlink_to(VERIFY_DIR)
        (folder.parent / "roles").symlink_to(ROOT / "roles")
        values = "{{ dict(want | zip(query('ansible.builtin.vars', *want))) | to_json }}"
        back = {
            "name": "Hand the values back",
            "ansible.builtin.copy": {
                "content": values,
                "dest": f"{folder}/{{{{ inventory_hostname }}}}.json",
            },
            "vars": {"want": list(want)},
        }
        back["ansible.builtin.copy"]["mode"] = "0600"
        play = {
            "name": "controller",
            "hosts": "all",
            "connection": "local",
            "gather_facts": False,
            "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}", **(play_vars or {})},
            "tasks": [*tasks, back],
        }
        if stubs:
            play["environment"] = {
                "PATH": f"{stubs}:{os.environ['PATH']}",
                "STUB_CASE": "{{ inventory_hostname }}",
            }
        (folder / "play.yml").write_text(yaml.safe_dump([play], sort_keys=False))
        (folder / "cases.yml").write_text(yaml.safe_dump({"all": {"hosts": cases}}))
        command = [self.ansible_playbook, "-i", str(folder / "cases.yml"), str(folder / "play.yml")]
        env = {**ansible_env(), "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        failures: dict[str, list[str]] = {case: [] for case in cases}
        for match in FAILED.finditer(result.stdout):
            failed, _ = json.JSONDecoder().raw_decode(result.stdout, match.end())
            failures[match["host"]].append(failed.get("msg", ""))
        found = {}
        for case in cases:
            out = folder / f"{case}.json"
            found[case] = Case(
                out.exists(), json.loads(out.read_text()) if out.exists() else None, failures[case]
            )
        assert any(c.ok or c.failures for c in found.values()), result.stdout[-3000:] + result.stderr[-3000:]
        return found


# What a controller play may run: reading and defining, the copy that hands values back into
# pytest's temporary folder, and (with stubs) commands, whose programs the stubs stand in for.
SAFE = {
    f"ansible.builtin.{name}"
    for name in (
        "set_fact",
        "assert",
        "fail",
        "debug",
        "include_vars",
        "include_role",
        "include_tasks",
        "import_tasks",
        "stat",
    )
}
STUBBED = {"ansible.builtin.command", "ansible.builtin.shell"}
KEYWORDS = {
    "name", "vars", "when", "loop", "loop_control", "register", "changed_when", "failed_when", "until",
    "retries", "delay", "no_log", "args", "block", "rescue", "always", "delegate_to", "become", "tags",
}  # fmt: skip


def actions(tasks, base: Path | None = None) -> set[str]:
    """The actions of tasks, blocks opened, and of the role task files they include (and those
    files' own imports, relative to the role's tasks folder ``base``)."""
    found = set()
    for task in tasks_of(tasks):
        (action,) = set(task) - KEYWORDS or {"block"}
        found.add(action)
        if action == "ansible.builtin.include_role":
            folder = ROOT / "roles" / task[action]["name"] / "tasks"
            found |= actions(load(folder / task[action].get("tasks_from", "main.yml")), folder)
        elif action in INCLUDES and base is not None:
            found |= actions(load(base / include_name(task)), base)
    return found - {"block"}


@pytest.fixture(scope="module")
def controller(ansible_playbook, tmp_path_factory) -> Controller:
    return Controller(ansible_playbook, tmp_path_factory.mktemp("controller"))


def resolve(name: str, base: Path) -> Path:
    """An include's rendered name as a file of the project (through the play's verify/ link)."""
    return (base / name).resolve()


@pytest.fixture(scope="module")
def evaluated(controller) -> dict[str | None, dict]:
    """What Ansible makes of verify.yml's includes, for no verify_target (the default) and for
    each target given: `rounds`, the round files its loop includes, in that order; `when`, which
    of verify.yml's own includes run ({index in tasks_of: bool}); `includes`, every include of
    verify.yml and verify/ but the loop, by the name Ansible renders ({(file, index of the task
    in tasks_of(file)): the file it includes})."""
    verify_tasks = tasks_of(verify_play()["tasks"])
    (loop_task,) = [t for t in verify_tasks if t.get("loop_control", {}).get("loop_var") == "verify_file"]
    conditions = {
        f"when{index}": f"{{{{ {task['when']} }}}}"
        for index, task in enumerate(verify_tasks)
        if include_name(task) and "when" in task
    }
    templates: dict[str, str] = {}
    where: dict[str, tuple[Path, int]] = {}
    for path in [VERIFY, *sorted(VERIFY_DIR.rglob("*.yml"))]:
        tasks = verify_tasks if path == VERIFY else tasks_of(load(path))
        for index, task in enumerate(tasks):
            if include_name(task) and task is not loop_task:
                key = f"include{len(templates)}"
                templates[key] = include_name(task)
                where[key] = (path, index)
    # A target given takes the place of the play's default, as -e verify_target=... does.
    given = {
        "ansible.builtin.set_fact": {"verify_target": "{{ given_target }}"},
        "when": "given_target is defined",
    }
    evaluate = {
        "ansible.builtin.set_fact": {
            "round_files": loop_task["loop"],
            "conditions": conditions,
            "rendered": templates,
        }
    }
    cases = {"default": {}, **{target: {"given_target": target} for target in TARGETS}}
    results = controller.run(
        [given, evaluate],
        cases=cases,
        play_vars=verify_play()["vars"],
        want=["round_files", "conditions", "rendered", "playbook_dir"],
    )
    found = {}
    for case, result in results.items():
        assert result.ok, result.failures
        values = result.values
        includes = {}
        for key, name in values["rendered"].items():
            path, index = where[key]
            # A relative name is the playbook folder's in verify.yml, the including file's elsewhere.
            includes[(path, index)] = resolve(
                name, Path(values["playbook_dir"]) if path == VERIFY else path.parent
            )
        found[None if case == "default" else case] = {
            "rounds": [Path(name).resolve() for name in values["round_files"]],
            "when": {int(key.removeprefix("when")): value for key, value in values["conditions"].items()},
            "includes": includes,
        }
    return found


def reached(target: str | None, evaluated) -> set[Path]:
    """Every task file the target includes, from verify.yml's own tasks down."""
    todo = list(evaluated[target]["rounds"])
    for (path, index), included in evaluated[target]["includes"].items():
        if path == VERIFY and evaluated[target]["when"].get(index, True) is True:
            todo.append(included)
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        assert path.is_file(), f"{path} is included but missing"
        seen.add(path)
        todo += [file for (parent, _), file in evaluated[target]["includes"].items() if parent == path]
    return seen


def below(path: Path, includes) -> set[Path]:
    """A task file and every file it includes, directly or not."""
    todo, seen = [path], set()
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += [file for (parent, _), file in includes.items() if parent == current]
    return seen


def names(paths, under: Path) -> set[str]:
    return {str(p.relative_to(under)) for p in paths if p.is_relative_to(under)}


def fixture_variables(path: Path) -> set[str]:
    return {name for name in variables(load(path)) if name.startswith("fixture_")}


# The facts of the fixture's default host, Debian 12: what the role's data for the OS is chosen by.
HOST_FACTS = {
    "name": "Stand in for a Debian 12 host's facts",
    "ansible.builtin.set_fact": {
        "ansible_facts": {
            "distribution": "Debian",
            "distribution_major_version": "12",
            "distribution_version": "12.9",
        }
    },
}


def before_rounds() -> list[dict]:
    """verify.yml's own tasks before its rounds, after the host's facts: they load the role's data
    and define what the rounds read. On the controller they read and define only."""
    tasks = verify_play()["tasks"]
    rounds_at = next(index for index, task in enumerate(tasks) if "block" in task)
    return [HOST_FACTS, *tasks[:rounds_at]]


# --- which files each target runs -----------------------------------------------------------------


def test_the_fixture_target_is_the_default_and_runs_its_rounds_unchanged(evaluated):
    """Without verify_target verify runs the fixture's rounds: every file of rounds-fixture, in
    the order of their names, and every check but the two that need a real EC2 instance."""
    assert evaluated[None] == evaluated["fixture"], "without verify_target, verify runs the fixture's"
    rounds = evaluated["fixture"]["rounds"]
    assert rounds == sorted((VERIFY_DIR / "rounds-fixture").glob("*.yml"))
    assert [p.name for p in rounds][:3] == ["00-setup.yml", "10-ecs-config.yml", "20-after-converge.yml"]
    files = reached("fixture", evaluated)
    assert names(files, SUITES) == {"fixture.yml"}
    assert names(files, CHECKS) == {p.name for p in CHECKS.glob("*.yml")} - EC2_ONLY
    assert names(files, PROBE) == set(), "prepare loads the fixture's probe image"


# The checks that need a real EC2 instance: IMDSv2 of the real IMDS, and ecs-init's DNAT.
EC2_ONLY = {"host-imds-v2.yml", "task-credentials.yml"}


def test_the_ec2_target_runs_the_shared_checks_and_its_own_not_the_fixtures(evaluated):
    rounds = evaluated["ec2"]["rounds"]
    assert {path.parent for path in rounds} == {VERIFY_DIR / "rounds-ec2"}
    assert [p.name for p in rounds] == [
        "00-setup.yml",
        "10-after-reboot.yml",
        "20-restart-persistence.yml",
    ]
    files = reached("ec2", evaluated)
    assert names(files, SUITES) == {"ec2.yml"}
    assert names(files, CHECKS) == {
        "host-imds-v2.yml",
        "containers.yml",
        "rules.yml",
        "task-credentials.yml",
        "ecs-config.yml",
    }
    assert names(files, PROBE) == {"image.yml", "remove.yml"}
    assert names(files, VERIFY_DIR / "rounds-fixture") == set()
    for path in files:
        assert not fixture_variables(path), f"{path} needs the fixture's variables {fixture_variables(path)}"


def test_a_check_that_needs_the_fixture_is_named_so_and_only_the_fixture_runs_it(evaluated):
    """A check is named fixture-* when it only works against the fixture: each check that reads
    the fixture's variables (itself or through what it includes) is, no fixture-* check is run by
    ec2, and every check is run by some target."""
    by_target = {target: reached(target, evaluated) for target in TARGETS}
    includes = evaluated["fixture"]["includes"]
    for path in sorted(CHECKS.glob("*.yml")):
        reads = set().union(*(fixture_variables(file) for file in below(path, includes)))
        fixture_only = path.name.startswith("fixture-")
        assert fixture_only or not reads, f"{path.name} reads {reads}: name it fixture-{path.name}"
        runs_in = {target for target, files in by_target.items() if path in files}
        assert runs_in, f"{path.name} is run by no target"
        if fixture_only:
            assert runs_in == {"fixture"}, f"{path.name} works only against the fixture, yet {runs_in} run it"


def test_the_shared_checks_take_everything_target_specific_from_verify_variables(controller):
    for name in ("containers.yml", "rules.yml", "ecs-config.yml"):
        assert not fixture_variables(CHECKS / name), name
    # The fixture's setup, evaluated with the fixture's variables: the probes run the fixture's
    # image and must not see the fixture's instance ID; the allowlisted network must see it.
    setup = load(VERIFY_DIR / "rounds-fixture" / "00-setup.yml")
    assert {next(k for k in t if k != "name") for t in tasks_of(setup)} == {"ansible.builtin.set_fact"}
    fixture = load(FIXTURE_VARS)
    (result,) = controller.run(
        [*before_rounds(), *setup],
        play_vars={**verify_play()["vars"], **{k: v for k, v in fixture.items() if k.startswith("fixture_")}},
        want=["verify_probes", "verify_probe_run_image", "verify_instance_id", "fixture_probe_image"],
    ).values()
    assert result.ok, result.failures
    facts = result.values
    assert facts["verify_probe_run_image"] == facts["fixture_probe_image"] != ""
    assert facts["verify_instance_id"] == fixture["fixture_instance_id"]
    reachable = [p for p in facts["verify_probes"] if p["reachable"]]
    assert [(p["network"], p["address"], p["expect"]) for p in reachable] == [
        ("bridge", "169.254.170.2", "AccessKeyId"),
        ("imds-allowed", "169.254.169.254", fixture["fixture_instance_id"]),
    ]
    ec2_setup = load(VERIFY_DIR / "rounds-ec2" / "00-setup.yml")
    defined = {k for t in tasks_of(ec2_setup) for k in t.get("ansible.builtin.set_fact", {})}
    assert "verify_probes" in defined


def test_verify_reads_the_host_programs_configuration_as_the_role_renders_it(controller):
    """verify decides nothing the role decides: its variables come from the configuration the
    role's own validate.yml renders for the host's facts and the play's variables (the fixture's,
    and IPv6 off), the same the filter renders for them."""
    from ecs_imds_block.filter_plugins.ecs_imds_block import ecs_imds_block_config

    fixture = {k: v for k, v in load(FIXTURE_VARS).items() if k.startswith("ecs_imds_block_")}
    cases = {"fixture": fixture, "no-ipv6": {**fixture, "ecs_imds_block_ipv6": False}}
    want = ["verify_config", "verify_families", "verify_services", "verify_imds", "verify_attribute_setting"]
    results = controller.run(before_rounds(), cases=cases, play_vars=verify_play()["vars"], want=want)
    names = load(ROOT / "roles" / "ecs_imds_block" / "vars" / "main.yml")["ecs_imds_block__names"]
    os_data = load(ROOT / "roles" / "ecs_imds_block" / "vars" / "Debian-12.yml")["ecs_imds_block__os"]
    defaults = load(ROOT / "roles" / "ecs_imds_block" / "defaults" / "main.yml")
    for case, role_vars in cases.items():
        result = results[case]
        assert result.ok, result.failures
        values = {k.removeprefix("ecs_imds_block_"): v for k, v in {**defaults, **role_vars}.items()}
        settings = {k: values[k] for k in FILTER_SETTINGS}
        assert result.values["verify_config"] == json.loads(ecs_imds_block_config(os_data, names, settings))
        families = [4, 6] if case == "fixture" else [4]
        assert [entry["family"] for entry in result.values["verify_families"]] == families
        assert [entry["path"] for entry in result.values["verify_families"]] == [
            f"/etc/iptables/rules.v{family}" for family in families
        ]
        assert result.values["verify_services"] == ["netfilter-persistent.service"]
        assert result.values["verify_imds"] == {"4": "169.254.169.254", "6": "fd00:ec2::254"}
        assert (
            result.values["verify_attribute_setting"]
            == 'ECS_INSTANCE_ATTRIBUTES={"ecs-imds-block":"enforced"}'
        )


def test_verify_evaluates_its_variables_with_each_of_the_roles_switches_off(controller):
    """Molecule's can-fail test converges with ecs_imds_block_bridge=false, and a team may turn the
    attribute or IPv6 off: verify's setup must still evaluate, so that its checks, not its own
    variables, say what is off (bridge off turns the attribute off too)."""
    cases = {
        "bridge-off": {"ecs_imds_block_bridge": False},
        "attribute-off": {"ecs_imds_block_attribute": False},
        "ipv6-off": {"ecs_imds_block_ipv6": False},
    }
    want = ["verify_config", "verify_families", "verify_imds", "verify_attribute_setting"]
    results = controller.run(before_rounds(), cases=cases, play_vars=verify_play()["vars"], want=want)
    for case, result in results.items():
        assert result.ok, (case, result.failures)
        assert result.values["verify_config"]["ecs_config"]["attribute_on"] == (case == "ipv6-off")
        assert (result.values["verify_attribute_setting"] == "") == (case != "ipv6-off")


# --- what the ec2 checks do ------------------------------------------------------------------------


def ec2_setup() -> list[dict]:
    return tasks_of(load(VERIFY_DIR / "rounds-ec2" / "00-setup.yml"))


def test_ec2_probes_bridge_containers_over_ipv4_and_over_ipv6_only_where_there_is_a_path(controller):
    setup = ec2_setup()
    (define,) = [t for t in setup if "verify_probes" in t.get("ansible.builtin.set_fact", {})]
    (route,) = [t for t in setup if t.get("register") == "verify_ipv6_route"]
    (bridge,) = [t for t in setup if t.get("register") == "verify_bridge"]
    assert bridge["ansible.builtin.command"] == "docker network inspect bridge"
    # (rc of `ip -6 route get`, which fails without a route; the default bridge's EnableIPv6):
    # the addresses probed.
    expected = {
        (0, True): ["169.254.169.254", "fd00:ec2::254"],
        (0, False): ["169.254.169.254"],
        (2, True): ["169.254.169.254"],
        (2, False): ["169.254.169.254"],
    }
    cases = {
        f"rc{rc}-ipv6-{ipv6}": {
            "verify_ipv6_route": {"rc": rc},
            "verify_bridge": {"stdout": json.dumps([{"Name": "bridge", "EnableIPv6": ipv6}])},
        }
        for rc, ipv6 in expected
    }
    look = {"ansible.builtin.set_fact": {"route_command": route["ansible.builtin.command"]}}
    results = controller.run(
        [*before_rounds(), look, define],
        cases=cases,
        play_vars=verify_play()["vars"],
        want=["verify_probes", "verify_ipv6_probed", "route_command"],
    )
    for (rc, ipv6), probed in expected.items():
        result = results[f"rc{rc}-ipv6-{ipv6}"]
        assert result.ok, result.failures
        assert result.values["route_command"] == "ip -6 route get fd00:ec2::254"
        assert [(p["network"], p["address"], p["reachable"]) for p in result.values["verify_probes"]] == [
            ("bridge", address, False) for address in probed
        ], "no allowlisted network exists on a build instance, and nothing reachable is probed"
        assert result.values["verify_ipv6_probed"] is (len(probed) == 2)


def test_ec2_host_reads_imds_with_an_imdsv2_token(controller):
    ask, get, check, keep = tasks_of(load(CHECKS / "host-imds-v2.yml"))
    assert (ask["register"], get["register"]) == ("verify_imds_token", "verify_imds_read")
    for task in (ask, get):
        assert task["ansible.builtin.uri"]["use_proxy"] is False
        assert task["no_log"] is True, "the token reads the instance's credentials"
    # The verdict and the instance ID kept, on what the two requests could have registered:
    # (token's status, read's status, read's content, passes). None: nothing answered, and
    # the uri result holds no status.
    answers = {
        "imdsv2": (200, 200, "i-0123456789abcdef0", True),
        "short-id": (200, 200, "i-01234567", True),
        "token-refused": (401, 401, "", False),
        "read-refused": (200, 401, "", False),
        "not-an-instance-id": (200, 200, "<html>proxy error</html>", False),
        "no-answer": (None, None, None, False),
    }
    cases = {
        case: {
            "verify_context": "a test",
            "verify_imds_token": {} if token is None else {"status": token, "content": "t"},
            "verify_imds_read": {} if read is None else {"status": read, "content": content},
        }
        for case, (token, read, content, _) in answers.items()
    }
    # The two requests' arguments as Ansible renders them (not sent), then the verdict.
    requests = {
        "ansible.builtin.set_fact": {"asked": ask["ansible.builtin.uri"], "read": get["ansible.builtin.uri"]}
    }
    results = controller.run(
        [*before_rounds(), requests, check, keep],
        cases=cases,
        play_vars=verify_play()["vars"],
        want=["asked", "read", "verify_instance_id"],
    )
    for case, (_, _, content, passes) in answers.items():
        assert results[case].ok is passes, (case, results[case])
        if passes:
            asked, read = results[case].values["asked"], results[case].values["read"]
            assert (asked["method"], asked["url"]) == ("PUT", "http://169.254.169.254/latest/api/token")
            assert list(asked["headers"]) == ["X-aws-ec2-metadata-token-ttl-seconds"]
            assert (read.get("method", "GET"), read["url"]) == (
                "GET",
                "http://169.254.169.254/latest/meta-data/instance-id",
            )
            assert read["headers"] == {"X-aws-ec2-metadata-token": "t"}, "the read carries the token"
        if passes:
            assert results[case].values["verify_instance_id"] == content
        else:
            assert "cannot read IMDS with IMDSv2" in " ".join(results[case].failures), case


def stub(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + textwrap.dedent(script))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_ec2_checks_the_task_credentials_dnat_that_ecs_init_installs(controller, tmp_path):
    """The block of task-credentials.yml, run with iptables, systemctl and sleep stubbed: it reads
    the nat table's PREROUTING, waits for ecs-init's rule (15 reads, 2 s apart), and fails
    without it."""
    (block,) = load(CHECKS / "task-credentials.yml")
    assert block["vars"]["verify_task_credentials_dnat"] == DNAT
    stubs = tmp_path / "bin"
    stubs.mkdir()
    chain = ["-P PREROUTING ACCEPT", "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER"]
    (tmp_path / "present.nat").write_text("\n".join([*chain, DNAT]) + "\n")
    (tmp_path / "absent.nat").write_text("\n".join(chain) + "\n")
    calls = f'{tmp_path}/"$STUB_CASE".calls'
    stub(stubs, "iptables", f'echo "iptables $*" >>{calls}\ncat {tmp_path}/"$STUB_CASE".nat\n')
    stub(stubs, "systemctl", f'echo "systemctl $*" >>{calls}\necho active\n')
    stub(stubs, "sleep", f'echo "sleep $*" >>{calls}\n')
    results = controller.run(
        [block],
        cases={"present": {}, "absent": {}},
        play_vars={"verify_context": "a test"},
        stubs=stubs,
        want=["verify_nat"],
    )
    for case in ("present", "absent"):
        reads = [line for line in (tmp_path / f"{case}.calls").read_text().splitlines()]
        assert {line for line in reads if not line.startswith(("sleep", "systemctl"))} == {
            "iptables -w -t nat -S PREROUTING"
        }, "it reads the nat table's PREROUTING only"
    present, absent = results["present"], results["absent"]
    assert present.ok, present.failures
    assert present.values["verify_nat"]["stdout_lines"] == ["ecs.service is active", *chain, DNAT]
    assert (tmp_path / "present.calls").read_text().splitlines().count(
        "iptables -w -t nat -S PREROUTING"
    ) == 2
    assert not absent.ok and "the nat table lacks" in " ".join(absent.failures)
    made = (tmp_path / "absent.calls").read_text().splitlines()
    assert made.count("iptables -w -t nat -S PREROUTING") == 16 and made.count("sleep 2") == 15, (
        "without the rule it reads 15 times, 2 s apart, then once to show the chain"
    )


def test_ec2_starts_ecs_service_so_that_ecs_init_installs_its_rule():
    (start,) = [t for t in ec2_setup() if "ansible.builtin.systemd_service" in t]
    assert start["ansible.builtin.systemd_service"]["state"] == "started"
    assert start["loop"] == ["docker.service", "ecs.service"]


def test_ec2_fails_when_the_reboot_did_not_happen(controller, tmp_path):
    """The stat and the assert of the ec2 setup, on a marker file that is still there (no reboot),
    one the reboot removed, and none asked for."""
    setup = ec2_setup()
    (look,) = [t for t in setup if "ansible.builtin.stat" in t]
    check = task_named(setup, "The build instance rebooted after the role")
    (tmp_path / "still-there").write_text("")
    markers = {
        "no-reboot": str(tmp_path / "still-there"),
        "rebooted": str(tmp_path / "gone"),
        "no-marker": "",
    }
    results = controller.run(
        [look, check], cases={case: {"verify_reboot_marker": path} for case, path in markers.items()}
    )
    assert not results["no-reboot"].ok
    assert "the instance has not rebooted" in " ".join(results["no-reboot"].failures)
    assert results["rebooted"].ok and results["no-marker"].ok, results


def test_ec2_removes_the_probe_image_whatever_happened(controller, tmp_path, evaluated):
    (run,) = [t for t in verify_play()["tasks"] if "always" in t]
    (cleanup,) = run["always"]
    index = tasks_of(verify_play()["tasks"]).index(cleanup)
    assert evaluated["ec2"]["includes"][(VERIFY, index)] == PROBE / "remove.yml"
    assert {target: evaluated[target]["when"][index] for target in TARGETS} == {"fixture": False, "ec2": True}
    # remove.yml with docker stubbed: `image rm` removes the image, `image inspect` then fails.
    stubs = tmp_path / "bin"
    stubs.mkdir()
    calls = f'{tmp_path}/"$STUB_CASE".calls'
    stub(
        stubs,
        "docker",
        f'echo "docker $*" >>{calls}\n[ "$2" = rm ] && exit 0\necho "No such image" >&2\nexit 1\n',
    )
    image = {"verify_probe_run_image": "probe:latest"}
    cases = {
        "brought": {**image, "verify_probe_remove": True},
        "had-it": {**image, "verify_probe_remove": False},
    }
    results = controller.run(load(PROBE / "remove.yml"), cases=cases, stubs=stubs)
    assert all(result.ok for result in results.values()), results
    brought = (tmp_path / "brought.calls").read_text().splitlines()
    assert brought == ["docker image rm probe:latest", "docker image inspect probe:latest"]
    assert not (tmp_path / "had-it.calls").exists(), "an image the instance had before stays"


def test_ec2_runs_as_root_through_sudo_and_waits_for_the_rebooted_instance():
    wait_play, play = load(VERIFY)
    assert play["become"] == "{{ verify_target == 'ec2' }}"
    (wait,) = wait_play["tasks"]
    assert wait_play["gather_facts"] is False, "facts need a connection, which the wait provides"
    assert "ansible.builtin.wait_for_connection" in wait
    assert wait["when"] == "verify_target | default('fixture') == 'ec2'"


def test_an_unknown_target_is_refused(controller):
    refuse = task_named(verify_play()["tasks"], "Refuse an unknown target")
    play_vars = {k: v for k, v in verify_play()["vars"].items() if k != "verify_target"}
    cases = {target: {"verify_target": target} for target in (*TARGETS, "packer")}
    results = controller.run([refuse], cases=cases, play_vars=play_vars)
    assert results["fixture"].ok and results["ec2"].ok, results
    assert results["packer"].failures == ["verify_target must be one of ['fixture', 'ec2'], not packer"]


# --- ansible-playbook's own view ------------------------------------------------------------------


def listed_tasks(stdout: str) -> list[list[str]]:
    """The task names of each play in `ansible-playbook --list-tasks` output."""
    plays: list[list[str]] = []
    for line in stdout.splitlines():
        if line.startswith("  play #"):
            plays.append([])
        elif plays and line.startswith("      ") and line.strip():
            plays[-1].append(line.split("\tTAGS:")[0].strip())
    return plays


def in_blocks(tasks) -> list[str]:
    names = []
    for task in tasks:
        names += in_blocks(task["block"]) if "block" in task else [task["name"]]
    return names


@pytest.mark.parametrize("target", [None, "fixture", "ec2"])
def test_both_targets_pass_ansible_syntax_check_and_list_their_plays(ansible_playbook, target):
    extra = ["-e", json.dumps({"verify_target": target})] if target else []
    for mode in ("--syntax-check", "--list-tasks"):
        command = [ansible_playbook, "-i", "localhost,", mode, *extra, str(VERIFY)]
        result = subprocess.run(command, env=ansible_env(), capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    # Ansible lists the tasks of verify.yml's plays and of their blocks (not of `always`); what
    # they include comes at run time.
    assert listed_tasks(result.stdout) == [in_blocks(play["tasks"]) for play in load(VERIFY)]


IMAGES = {
    "": True,
    "public.ecr.aws/docker/library/busybox:1.36": True,
    "registry.example.com:5000/tools/busybox@sha256:" + "a" * 64: True,
    "localhost:5000/busybox": True,
    "busybox": False,
    "busybox:1.36": False,
    "library/busybox": False,
    "docker.io/library/busybox": False,
    "index.docker.io/library/busybox": False,
    "registry-1.docker.io/library/busybox": False,
}


def test_the_probe_image_never_comes_from_docker_hub(controller):
    """probe/image.yml's Docker Hub assert, with its block's variables, on each image name."""
    (block,) = load(PROBE / "image.yml")
    refusal = block["block"][0]
    assert "ansible.builtin.assert" in refusal
    cases = {f"image{index}": {"verify_probe_image": image} for index, image in enumerate(IMAGES)}
    results = controller.run([refusal], cases=cases, play_vars=block["vars"])
    for index, (image, allowed) in enumerate(IMAGES.items()):
        result = results[f"image{index}"]
        assert result.ok is allowed, (image, result)
        if not allowed:
            assert "is on Docker Hub" in " ".join(result.failures), image
