# Copyright: the ecs-imds-golden authors
# Apache License 2.0
"""What `packer build packer/` builds, variant by variant.

Neither Packer nor AWS is needed: tests/support/packer.py works out from the HCL what Packer
would configure, every build-level source merged over the shared source, with the variables,
locals and a fixed clock evaluated (data sources are not called: a source AMI is the SSM
Parameter it would be read from). The tests state, for each of the four variants, what its
build instance and AMI get: IMDSv2 only, encryption, deprecation, copies and sharing, tags, the
ECS-optimized AMI it starts from, the playbook and the manifest entry. Where a value comes from a
variable, the tests set the variable and look for the value in every build.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import ami_preflight as preflight
import pytest
from support.packer import EvalError, Parameter, Templates, text

from golden_ami import manifest

ROOT = Path(__file__).resolve().parents[1]
PACKER_DIR = ROOT / "packer"
PROJECT = "ecs-imds-golden"
NOW = "2030-01-02T03:04:05Z"  # the clock support.packer gives timestamp()

# build name -> (OS family, architecture), as `make ami OS=... ARCH=...` names them
VARIANTS = {
    "al2023-x86_64": ("al2023", "x86_64"),
    "al2023-arm64": ("al2023", "arm64"),
    "al2-x86_64": ("al2", "x86_64"),
    "al2-arm64": ("al2", "arm64"),
}
OS_NAMES = {"al2023": "Amazon Linux 2023", "al2": "Amazon Linux 2"}
RELEASE = {"region": "eu-west-1", "role_version": "0.1.0", "ami_name_prefix": "ecs-imds-golden"}


def ecs_optimized_parameter(variant: str) -> str:
    """The public SSM parameter naming the recommended ECS-optimized AMI of a variant."""
    family, arch = VARIANTS[variant]
    path = {"al2023": "amazon-linux-2023", "al2": "amazon-linux-2"}[family]
    return f"/aws/service/ecs/optimized-ami/{path}{'/arm64' if arch == 'arm64' else ''}/recommended/image_id"


@pytest.fixture(scope="module")
def packer() -> Templates:
    return Templates(PACKER_DIR)


@pytest.fixture(params=VARIANTS, scope="module")
def variant(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def build(packer, variant):
    return packer.build(f"amazon-ebs.{variant}")


# --- which builds there are ---------------------------------------------------------------------


def test_one_build_per_variant(packer):
    assert packer.build_names() == sorted(f"amazon-ebs.{name}" for name in VARIANTS)


def test_all_builds_fill_in_one_shared_source(packer):
    sources = {packer.build(name).source for name in packer.build_names()}
    assert len(sources) == 1, f"each variant should fill in the same amazon-ebs source, not {sources}"
    assert sources.pop().startswith("amazon-ebs.")


def test_make_ami_selects_exactly_the_build_of_its_variant(packer):
    """`make ami OS=.. ARCH=..` runs `packer build -only=...` for every variant preflight allows."""
    (only,) = re.findall(r'packer build -only="([^"]+)"', (ROOT / "Makefile").read_text())
    selected = {
        only.replace("$(OS)", os_name).replace("$(ARCH)", arch)
        for os_name, arches in preflight.VARIANTS.items()
        for arch in arches
    }
    assert selected == set(packer.build_names())


def test_a_missing_instance_type_breaks_only_the_builds_of_its_architecture():
    x86_only = Templates(PACKER_DIR, {"instance_types": {"x86_64": "m7i.large"}})
    for name, (_, arch) in VARIANTS.items():
        if arch == "x86_64":
            assert x86_only.build(f"amazon-ebs.{name}").settings["instance_type"] == "m7i.large"
        else:
            with pytest.raises(EvalError, match="arm64"):
                x86_only.build(f"amazon-ebs.{name}")


# --- the build instance ------------------------------------------------------------------------------


def test_build_instance_is_imdsv2_only_with_one_hop(build):
    assert build.blocks.get("metadata_options") == [
        {"http_endpoint": "enabled", "http_tokens": "required", "http_put_response_hop_limit": 1}
    ], "the build instance must require IMDSv2 tokens, with a hop limit of 1"


def test_build_instance_type_matches_the_architecture(build, variant):
    expected = {"x86_64": "m7i.large", "arm64": "m7g.large"}[VARIANTS[variant][1]]
    assert build.settings["instance_type"] == expected
    custom = Templates(PACKER_DIR, {"instance_types": {"x86_64": "c7i.xlarge", "arm64": "c7g.xlarge"}})
    expected = {"x86_64": "c7i.xlarge", "arm64": "c7g.xlarge"}[VARIANTS[variant][1]]
    assert custom.build(build.name).settings["instance_type"] == expected


def test_build_runs_in_the_build_region_and_subnet_as_ec2_user(build):
    assert build.settings["region"] == RELEASE["region"]
    assert build.settings["subnet_id"] == "", "no subnet given: the default VPC"
    assert build.settings["ssh_username"] == "ec2-user"
    subnet = "subnet-0123456789abcdef0"
    assert Templates(PACKER_DIR, {"subnet_id": subnet}).build(build.name).settings["subnet_id"] == subnet


def test_build_starts_from_the_ecs_optimized_ami_of_its_variant(build, variant):
    assert build.settings["source_ami"] == Parameter(ecs_optimized_parameter(variant), RELEASE["region"])
    elsewhere = Templates(PACKER_DIR, {"region": "us-east-1"}).build(build.name)
    assert elsewhere.settings["source_ami"] == Parameter(ecs_optimized_parameter(variant), "us-east-1"), (
        "the source AMI is read in the build region"
    )


def test_every_data_source_reads_an_ecs_optimized_parameter_in_the_build_region(packer):
    """Packer reads every data source at the start of every build, -only or not."""
    expected = {ecs_optimized_parameter(name) for name in VARIANTS}
    for (data_type, name), block in packer.data.items():
        assert data_type == "amazon-parameterstore", f"data {data_type}.{name}: only SSM reads are expected"
        value = packer.eval(block.body.attributes["name"], block.body)
        assert value in expected, f"data {data_type}.{name} reads {value}"
        assert packer.eval(block.body.attributes["region"], block.body) == RELEASE["region"]


# --- the AMI -------------------------------------------------------------------------------------


def test_ami_is_imdsv2_only(build):
    assert build.settings["imds_support"] == "v2.0"


def test_ami_is_encrypted_with_the_configured_key(build):
    assert build.settings["encrypt_boot"] is True
    assert build.settings["kms_key_id"] == "", "no key given: the AWS-managed aws/ebs key"
    assert build.settings["region_kms_key_ids"] == {}
    keys = {"kms_key_id": "alias/golden", "region_kms_key_ids": {"eu-west-1": "alias/golden"}}
    settings = Templates(PACKER_DIR, keys).build(build.name).settings
    assert settings["encrypt_boot"] is True
    assert {key: settings[key] for key in keys} == keys


def test_ami_deprecates_after_the_configured_days(build):
    assert build.settings["deprecate_at"] == "2030-04-02T03:04:05Z", "90 days after the build"
    week = Templates(PACKER_DIR, {"deprecate_after_days": 7}).build(build.name)
    assert week.settings["deprecate_at"] == "2030-01-09T03:04:05Z"


def test_ami_is_copied_and_shared_as_configured(build):
    assert build.settings["ami_regions"] == ["eu-west-1"]
    for key in ("ami_users", "ami_org_arns", "ami_ou_arns"):
        assert build.settings[key] == [], f"{key}: private unless shared"
    sharing = {
        "ami_regions": ["eu-west-1", "us-east-1"],
        "ami_users": ["111122223333"],
        "ami_org_arns": ["arn:aws:organizations::111122223333:organization/o-exampleorgid"],
        "ami_ou_arns": ["arn:aws:organizations::111122223333:ou/o-exampleorgid/ou-abcd-exampleou"],
    }
    settings = Templates(PACKER_DIR, sharing).build(build.name).settings
    assert {key: settings[key] for key in sharing} == sharing


def test_ami_name_is_prefix_variant_and_build_time(build, variant):
    assert build.settings["ami_name"] == f"{RELEASE['ami_name_prefix']}-{variant}-20300102T030405Z"
    longest = Templates(PACKER_DIR, {"ami_name_prefix": "p" * 64}).build(build.name)
    assert len(longest.settings["ami_name"]) <= 128, "AWS allows AMI names of up to 128 characters"


def test_ami_description_names_the_variant_role_version_and_commit(build, variant):
    family, arch = VARIANTS[variant]
    described = Templates(PACKER_DIR, {"git_commit": "0123abc"}).build(build.name).settings["ami_description"]
    assert described == (
        f"ECS-optimized {OS_NAMES[family]} ({arch}), containers kept away from IMDS. "
        f"ecs_imds_block {RELEASE['role_version']}, commit 0123abc."
    )


@pytest.mark.parametrize("attribute", ["tags", "snapshot_tags", "run_tags"])
def test_ami_snapshots_and_build_instance_are_tagged_with_the_build(variant, attribute):
    """run_tags too: the build role's IAM conditions (iam/packer-build.json) require Project."""
    family, arch = VARIANTS[variant]
    build = Templates(PACKER_DIR, {"git_commit": "0123abc"}).build(f"amazon-ebs.{variant}")
    assert build.settings[attribute] == {
        "Name": build.settings["ami_name"],
        "Project": PROJECT,
        "OS": family,
        "Architecture": arch,
        "SourceAMI": build.settings["source_ami"],
        "SourceAMIParameter": ecs_optimized_parameter(variant),
        "RoleVersion": RELEASE["role_version"],
        "GitCommit": "0123abc",
        "BuildTime": NOW,
    }


def test_build_volumes_carry_the_project_tag(build):
    assert build.settings["run_volume_tags"]["Project"] == PROJECT


# --- provisioning and the manifest ---------------------------------------------------------------


PLAYBOOKS = ROOT / "playbooks"


def ansible_tasks(ansible_playbook: str, playbook: Path, *args: str) -> list[tuple[str, set[str]]]:
    """(task name, tags) of a playbook, from `ansible-playbook --list-tasks`."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
    }
    command = [ansible_playbook, "-i", "localhost,", "--list-tasks", *args, str(playbook)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    tasks = []
    for line in result.stdout.splitlines():
        match = re.fullmatch(r"\s{6}(.+?)\tTAGS: \[(.*)\]", line)
        if match:
            tasks.append((match.group(1), {tag.strip() for tag in match.group(2).split(",") if tag.strip()}))
    return tasks


def extra_vars(settings: dict) -> dict:
    """The --extra-vars JSON an ansible step passes, merged."""
    arguments = settings.get("extra_arguments", [])
    found: dict = {}
    for flag, value in itertools.pairwise(arguments):
        if flag in ("--extra-vars", "-e"):
            found.update(json.loads(value))
    return found


def step(kind: str, settings: dict) -> str:
    """What a provisioner does, in the words of the build order."""
    if kind == "shell":
        if settings.get("expect_disconnect") is True and settings["inline"][-1] == "sudo systemctl reboot":
            return "reboot"
        return f"shell {settings['inline']}"
    assert kind == "ansible", kind
    playbook = Path(settings["playbook_file"]).resolve().relative_to(PLAYBOOKS)
    arguments = settings.get("extra_arguments", [])
    if str(playbook) == "golden-ami.yml" and arguments == ["--skip-tags", "build_hygiene"]:
        return "role"
    if str(playbook) == "verify.yml" and extra_vars(settings).get("verify_target") == "ec2":
        return "verify against the real IMDS"
    if str(playbook) == "build-hygiene.yml" and not arguments:
        return "hygiene"
    return f"ansible {playbook} {arguments}"


def test_build_order_is_role_reboot_verify_hygiene_validate_manifest(build, ansible_playbook):
    """Only a build that passed verify on its own rebooted instance gets cleaned and becomes an AMI."""
    steps = [step(kind, settings) for kind, settings in build.provisioners]
    assert steps == ["role", "reboot", "verify against the real IMDS", "hygiene"], steps
    # The hygiene step's run ends with its validate tasks (tag hygiene_validate): no other step
    # can follow it over SSH, since hygiene removes authorized_keys.
    (hygiene,) = [
        s for k, s in build.provisioners if k == "ansible" and "build-hygiene" in s["playbook_file"]
    ]
    tasks = ansible_tasks(ansible_playbook, Path(hygiene["playbook_file"]))
    validating = [("hygiene_validate" in tags) for _, tags in tasks]
    assert validating == sorted(validating) and validating[0] is False and validating[-1] is True, tasks
    steps[-1:] = ["hygiene", "validate"]
    steps += [kind for kind, _ in build.post_processors]
    assert steps == ["role", "reboot", "verify against the real IMDS", "hygiene", "validate", "manifest"]


def test_the_role_step_runs_the_role_and_leaves_hygiene_for_last(build, ansible_playbook):
    """`make image` applies golden-ami.yml whole; Packer's role step skips its hygiene play."""
    role_step = build.provisioners[0][1]
    playbook = Path(role_step["playbook_file"]).resolve()
    assert playbook == PLAYBOOKS / "golden-ami.yml"
    whole = [name for name, _ in ansible_tasks(ansible_playbook, playbook)]
    skipped = [name for name, _ in ansible_tasks(ansible_playbook, playbook, *role_step["extra_arguments"])]
    hygiene = [name for name, _ in ansible_tasks(ansible_playbook, PLAYBOOKS / "build-hygiene.yml")]
    assert hygiene and whole[-len(hygiene) :] == hygiene, "make image still gets hygiene from golden-ami.yml"
    assert skipped == whole[: -len(hygiene)], "Packer's role step is the role, without hygiene"
    assert skipped and all(name.startswith("ecs_imds_block : ") for name in skipped)


def test_the_reboot_leaves_a_mark_in_run_that_verify_looks_for(build):
    (reboot,) = [settings for kind, settings in build.provisioners if kind == "shell"]
    (verify,) = [
        s for k, s in build.provisioners if k == "ansible" and s["playbook_file"].endswith("/verify.yml")
    ]
    marker = extra_vars(verify)["verify_reboot_marker"]
    assert marker.startswith("/run/"), "/run is a tmpfs: a reboot empties it"
    assert reboot["inline"] == [f"sudo touch {marker}", "sudo systemctl reboot"]
    assert re.fullmatch(r"\d+s", verify["pause_before"]), "the reboot begins before verify connects"


def test_verify_gets_the_probe_image_variable(build):
    def verify_vars(templates: Templates) -> dict:
        (verify,) = [
            settings
            for kind, settings in templates.build(build.name).provisioners
            if kind == "ansible" and settings["playbook_file"].endswith("/verify.yml")
        ]
        return extra_vars(verify)

    assert verify_vars(Templates(PACKER_DIR))["verify_probe_image"] == "", "by default, built on the instance"
    image = "public.ecr.aws/docker/library/busybox:1.36"
    assert verify_vars(Templates(PACKER_DIR, {"verify_probe_image": image}))["verify_probe_image"] == image


def test_every_ansible_step_reaches_the_instance_the_same_way(build):
    steps = [settings for kind, settings in build.provisioners if kind == "ansible"]
    assert len(steps) == 3
    for settings in steps:
        assert settings["command"] == "ansible-playbook", "var.ansible_playbook_command, by default"
        assert settings["user"] == "ec2-user"
        assert settings["use_proxy"] is False, "straight to the instance over SSH"
        env = dict(item.split("=", 1) for item in settings["ansible_env_vars"])
        assert Path(env["ANSIBLE_CONFIG"]).resolve() == ROOT / "ansible.cfg"
        assert (Path(env["ANSIBLE_ROLES_PATH"]) / "ecs_imds_block").is_dir()
    controller = "/opt/ansible-core-2.16/bin/ansible-playbook"
    custom = Templates(PACKER_DIR, {"ansible_playbook_command": controller}).build(build.name)
    assert {settings["command"] for kind, settings in custom.provisioners if kind == "ansible"} == {
        controller
    }


def test_build_records_its_variant_in_the_manifest(build, variant):
    (post_processor,) = build.post_processors
    kind, settings = post_processor
    assert kind == "manifest"
    assert Path(settings["output"]).resolve() == PACKER_DIR / "manifest.json"
    assert settings["strip_path"] is True
    family, arch = VARIANTS[variant]
    assert settings["custom_data"] == {
        "os": family,
        "architecture": arch,
        "source_ami": build.settings["source_ami"],
        "source_ami_parameter": ecs_optimized_parameter(variant),
        "role_version": RELEASE["role_version"],
        "git_commit": "unknown",
    }


def test_publish_reads_the_manifest_the_builds_write(packer, tmp_path):
    """Entries as Packer writes them (its name is the shared source's) pass golden_ami.manifest."""
    entries = []
    for number, name in enumerate(packer.build_names()):
        build = packer.build(name)
        custom = {
            k: "ami-0123456789abcdef0" if isinstance(v, Parameter) else v
            for k, v in build.post_processors[0][1]["custom_data"].items()
        }
        entries.append(
            {
                "name": build.source.split(".", 1)[1],
                "builder_type": "amazon-ebs",
                "build_time": 1893553445,
                "files": None,
                "artifact_id": f"eu-west-1:ami-0{number}23456789abcdef0",
                "packer_run_uuid": "run",
                "custom_data": custom,
            }
        )
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"builds": entries, "last_run_uuid": "run"}))
    assert sorted((b.os, b.arch) for b in manifest.read(path)) == sorted(VARIANTS.values())


def test_manifest_output_is_git_ignored():
    """git itself says the manifest the post-processor writes is ignored, wherever the rule is."""
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--quiet", "packer/manifest.json"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "git would track packer/manifest.json"
    tracked = subprocess.run(
        ["git", "check-ignore", "--no-index", "--quiet", "packer/build.pkr.hcl"], cwd=ROOT
    )
    assert tracked.returncode == 1, "the check would pass for any path"


# --- pins and variables ---------------------------------------------------------------------------


def test_packer_and_plugins_are_pinned(packer):
    (settings,) = packer.of_type("packer")
    required = packer.eval(settings.body.attributes["required_version"], settings.body)
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)", required)
    assert match and tuple(map(int, match.groups())) >= (1, 10, 0), f"required_version {required!r}"
    (plugins,) = [block for block in settings.body.blocks if block.type == "required_plugins"]
    pins = {name: packer.eval(tree, plugins.body) for name, tree in plugins.body.attributes.items()}
    assert {name: pin["source"] for name, pin in pins.items()} == {
        "amazon": "github.com/hashicorp/amazon",
        "ansible": "github.com/hashicorp/ansible",
    }
    for name, pin in pins.items():
        assert re.fullmatch(r"=\s*\d+\.\d+\.\d+", pin["version"]), f"plugin {name}: pin an exact version"


def test_every_variable_is_typed_described_and_used(packer):
    for name, variable in packer.variables.items():
        assert variable.type, f"variable {name}: no type"
        assert isinstance(variable.description, str) and variable.description.strip(), (
            f"{name}: no description"
        )
    used = packer.references("var")
    assert used - set(packer.variables) == set(), "undeclared variables"
    assert set(packer.variables) - used == set(), "unused variables"
    assert set(packer.local_trees) - packer.references("local") == set(), "unused locals"


def test_release_values_cover_every_required_variable_and_pass_validation(packer):
    required = {name for name, variable in packer.variables.items() if variable.required}
    assert required <= set(packer.auto_values), f"no value for {sorted(required - set(packer.auto_values))}"
    assert packer.validation_failures() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("region", "eu-west"),
        ("ami_regions", ["eu-west-1", "EU"]),
        ("instance_types", {"mips": "m7i.large"}),
        ("instance_types", {"x86_64": "large"}),
        ("ami_name_prefix", "-golden"),
        ("ami_name_prefix", "p" * 65),
        ("ami_users", ["12345"]),
        ("ami_org_arns", ["o-exampleorgid"]),
        ("ami_ou_arns", ["arn:aws:organizations::111122223333:organization/o-exampleorgid"]),
        ("kms_key_id", "my key"),
        ("region_kms_key_ids", {"europe": "alias/golden"}),
        ("deprecate_after_days", 0),
        ("deprecate_after_days", 1.5),
        ("deprecate_after_days", 3651),
        ("role_version", "1.0"),
        ("git_commit", "HEAD"),
        ("subnet_id", "subnet-1"),
        ("ansible_playbook_command", ""),
        ("verify_probe_image", "busybox:1.36"),
        ("verify_probe_image", "library/busybox"),
        ("verify_probe_image", "docker.io/library/busybox"),
        ("verify_probe_image", "index.docker.io/library/busybox:1.36"),
    ],
)
def test_validation_refuses_a_bad_value(name, value):
    failures = Templates(PACKER_DIR, {name: value}).validation_failures()
    assert [variable for variable, _ in failures] == [name], failures


def test_validation_messages_are_constant_sentences_about_their_own_variable(packer):
    """What Packer checks at load time: self-reference only, constant one-sentence messages."""
    for name, variable in packer.variables.items():
        for condition, message in variable.validations:
            referenced = set(re.findall(r"\bvar\.(\w+)", text(condition)))
            assert referenced == {name}, f"variable {name}: a condition may only use var.{name}"
            sentence = packer.constant(message)
            assert sentence[:1].isupper() and sentence.endswith("."), f"variable {name}: {sentence!r}"


# --- what tests/support/packer.py refuses, as Packer does ------------------------------------------

SHARED = 'source "amazon-ebs" "shared" {\n  region = "eu-west-1"\n}\n'


@pytest.mark.parametrize(
    ("build_block", "refusal"),
    [
        ('build {\n  source "amazon-ebs.shared" {\n    region = "us-east-1"\n  }\n}\n', "set both"),
        (
            'build {\n  source "amazon-ebs.shared" {\n    name = local.n\n  }\n}\nlocals {\n  n = "x"\n}\n',
            "may not",
        ),
    ],
    ids=["field-set-twice", "name-from-a-local"],
)
def test_the_evaluator_refuses_what_packer_refuses(tmp_path, build_block, refusal):
    (tmp_path / "t.pkr.hcl").write_text(SHARED + build_block)
    templates = Templates(tmp_path)
    with pytest.raises(EvalError, match=refusal):
        for name in templates.build_names():
            templates.build(name)


# --- style -------------------------------------------------------------------------------------------


def test_no_lone_interpolation_in_quotes(packer):
    """`var.x`, not `"${var.x}"`: HCL2 takes bare expressions."""
    assert packer.lone_interpolations() == []


def test_packer_fmt_check():
    """Run by whatever `packer` is on PATH; Packer < 1.7 has no -recursive, moot while flat."""
    binary = shutil.which("packer")
    if binary is None:
        pytest.fail("packer is not on PATH: install it (Debian: apt-get install packer) to check formatting")
    help_text = subprocess.run([binary, "fmt", "-h"], capture_output=True, text=True, check=False)
    command = [binary, "fmt", "-check"]
    if "-recursive" in help_text.stdout + help_text.stderr:
        command.append("-recursive")
    else:
        nested = [p for p in PACKER_DIR.rglob("*.hcl") if p.parent != PACKER_DIR]
        assert not nested, f"{binary} cannot check nested templates {nested}: upgrade Packer"
    result = subprocess.run([*command, "packer/"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, (
        f"`{' '.join(command)} packer/` failed; run `packer fmt -recursive packer/`:\n"
        f"{result.stdout}{result.stderr}"
    )
