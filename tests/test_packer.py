"""The Packer templates under packer/: pins, the four sources, the build, the variables.

Current Packer cannot run here, so these tests read the HCL with python-hcl2 and check
what `packer validate` could not tell us anyway (IMDSv2, encryption, tags, wiring).

python-hcl2 8.x quirks the helpers below absorb:
- a quoted string keeps its quotes: `"required"` loads as '"required"';
- a bare expression loads as '${...}': `var.region` gives '${var.region}', so a literal
  and an expression never look alike (and '"${var.x}"' betrays interpolation noise);
- except a lone keyword such as `type = string`, which loads bare as 'string';
- expressions are reprinted with normalised spacing (`{for k, v in x : k => v}`);
- block labels and quoted object keys keep their quotes too ('"amazon-ebs"');
- every block is a list of dicts marked '__is_block__': True, which tells a block
  (`metadata_options { ... }`) from an object attribute (`tags = { ... }`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKER_DIR = ROOT / "packer"
TEMPLATES = sorted(PACKER_DIR.glob("*.pkr.hcl"))
RELEASE_VARS = PACKER_DIR / "release.auto.pkrvars.hcl"
OPTIONS = hcl2.SerializationOptions(with_comments=False)

# source name -> (OS family, architecture)
SOURCES = {
    "al2023-x86_64": ("al2023", "x86_64"),
    "al2023-arm64": ("al2023", "arm64"),
    "al2-x86_64": ("al2", "x86_64"),
    "al2-arm64": ("al2", "arm64"),
}
PARAMETER_FAMILY = {"al2023": "amazon-linux-2023", "al2": "amazon-linux-2"}
PROJECT = "ecs-imds-golden"
SHARING = ("ami_regions", "ami_users", "ami_org_arns", "ami_ou_arns")
REQUIRED_TAGS = {
    "Name",
    "Project",
    "OS",
    "Architecture",
    "SourceAMI",
    "SourceAMIParameter",
    "RoleVersion",
    "GitCommit",
    "BuildTime",
}
VALIDATED = {
    "region",
    "ami_regions",
    "instance_types",
    "ami_name_prefix",
    "ami_users",
    "ami_org_arns",
    "ami_ou_arns",
    "deprecate_after_days",
}


def expected_parameter(name: str) -> str:
    family, arch = SOURCES[name]
    arch_segment = "/arm64" if arch == "arm64" else ""
    return f"/aws/service/ecs/optimized-ami/{PARAMETER_FAMILY[family]}{arch_segment}/recommended/image_id"


# --- reading python-hcl2 values ---------------------------------------------------------


def unquote(token: str) -> str:
    """A block label or object key, without the quotes python-hcl2 keeps."""
    return token[1:-1] if len(token) >= 2 and token[0] == token[-1] == '"' else token


def literal(value: Any, where: str) -> str:
    """The text of a quoted string without interpolation."""
    assert isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"', (
        f"{where}: expected a quoted string, got {value!r}"
    )
    assert "${" not in value, f"{where}: expected a plain string, got the template {value!r}"
    return value[1:-1]


def template(value: Any, where: str) -> str:
    """The text of a quoted string that may interpolate (`"${path.root}/..."`)."""
    assert isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"', (
        f"{where}: expected a quoted string, got {value!r}"
    )
    return value[1:-1]


def expression(value: Any, where: str) -> str:
    """The text of a bare expression (`var.x`, `merge(...)`), as python-hcl2 reprints it."""
    assert isinstance(value, str) and value.startswith("${") and value.endswith("}"), (
        f"{where}: expected a bare expression, got {value!r}"
    )
    return value[2:-1].strip()


def blocks(body: dict, key: str, where: str) -> list[dict]:
    """The unlabelled `key { ... }` blocks of a body (not an object attribute of that name)."""
    found = body.get(key, [])
    assert isinstance(found, list), f"{where}: {key} must be a block, got {found!r}"
    for block in found:
        assert isinstance(block, dict) and block.get("__is_block__") is True, (
            f"{where}: {key} must be a block, not an attribute"
        )
    return found


def type_constraint(value: Any, where: str) -> str:
    """A variable's type: python-hcl2 leaves a lone keyword (`string`) bare, wraps the rest."""
    if isinstance(value, str) and re.fullmatch(r"string|number|bool|any", value):
        return value
    return expression(value, where)


def resolved_path(value: Any, where: str) -> Path:
    """A `"${path.root}/..."` string as the path Packer gives it when run on packer/."""
    text = template(value, where)
    assert text.startswith("${path.root}/"), f"{where}: expected a path under ${{path.root}}, got {text!r}"
    return (PACKER_DIR / text.removeprefix("${path.root}/")).resolve()


# --- the templates, loaded once -----------------------------------------------------------


@dataclass(frozen=True)
class Block:
    file: str
    labels: tuple[str, ...]
    body: dict


def labelled(entries: list[dict], depth: int, file: str) -> list[Block]:
    """Flatten python-hcl2's nesting of labels ({'"type"': {'"name"': body}})."""
    out = []

    def walk(node: dict, labels: tuple[str, ...]) -> None:
        if len(labels) == depth:
            assert node.get("__is_block__") is True, f"{file}: {labels} is not a block"
            out.append(Block(file, labels, node))
            return
        for key, child in node.items():
            if key != "__is_block__":
                walk(child, (*labels, unquote(key)))

    for entry in entries:
        walk(entry, ())
    return out


class Templates:
    def __init__(self, paths: list[Path]) -> None:
        self.parsed = {path.name: load(path) for path in paths}
        self.text = {path.name: path.read_text() for path in paths}

    def collect(self, block_type: str, depth: int) -> list[Block]:
        found = []
        for file, doc in self.parsed.items():
            found += labelled(doc.get(block_type, []), depth, file)
        return found

    def variables(self) -> dict[str, Block]:
        return unique({b.labels[0]: b for b in self.collect("variable", 1)}, self.collect("variable", 1))

    def data(self) -> dict[str, Block]:
        found = self.collect("data", 2)
        assert {b.labels[0] for b in found} <= {"amazon-parameterstore"}, "only SSM data sources expected"
        return unique({b.labels[1]: b for b in found}, found)

    def sources(self) -> dict[str, Block]:
        found = self.collect("source", 2)
        return unique({f"{b.labels[0]}.{b.labels[1]}": b for b in found}, found)

    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for block in self.collect("locals", 0):
            for name, value in block.body.items():
                if name == "__is_block__":
                    continue
                assert name not in merged, f"local.{name} is defined twice"
                merged[name] = value
        return merged

    def builds(self) -> list[Block]:
        return self.collect("build", 0)


def load(path: Path) -> dict:
    with path.open() as handle:
        return hcl2.load(handle, serialization_options=OPTIONS)


def unique(by_name: dict[str, Block], found: list[Block]) -> dict[str, Block]:
    assert len(by_name) == len(found), f"duplicate blocks: {[b.labels for b in found]}"
    return by_name


@pytest.fixture(scope="module")
def packer() -> Templates:
    assert TEMPLATES, f"no *.pkr.hcl under {PACKER_DIR}"
    return Templates(TEMPLATES)


REFERENCE = re.compile(r'^local\.(\w+)((?:\["[^"]*"\]|\.\w+)*)$')


def resolve_local(reference: str, locals_: dict[str, Any], where: str) -> Any:
    """The value behind `local.x`, `local.x["k"]` or `local.x.k`."""
    match = REFERENCE.match(reference)
    assert match, f"{where}: expected a local reference, got {reference!r}"
    name, path = match.groups()
    assert name in locals_, f"{where}: local.{name} is not defined"
    value = locals_[name]
    for key in re.findall(r'\["([^"]*)"\]|\.(\w+)', path):
        key = key[0] or key[1]
        assert isinstance(value, dict), f"{where}: {reference} indexes a computed value"
        keys = {unquote(k): k for k in value}
        assert key in keys, f"{where}: {reference}: no key {key!r}"
        value = value[keys[key]]
    return value


def resolve_tags(value: Any, locals_: dict[str, Any], where: str) -> dict[str, Any]:
    """tags = merge(local.a, local.b["k"]) as one dict, later arguments winning."""
    text = expression(value, where)
    match = re.fullmatch(r"merge\((.*)\)", text)
    assert match, f"{where}: expected merge(<local>, ...), got {text!r}"
    tags: dict[str, Any] = {}
    for argument in match.group(1).split(","):
        part = resolve_local(argument.strip(), locals_, where)
        assert isinstance(part, dict), f"{where}: {argument.strip()} is not an object literal"
        tags.update({unquote(k): v for k, v in part.items()})
    return tags


# --- packer block ---------------------------------------------------------------------------


def test_packer_and_plugins_are_pinned(packer):
    settings = packer.collect("packer", 0)
    assert len(settings) == 1, f"expected one packer block, found {len(settings)}"
    body = settings[0].body
    required = literal(body.get("required_version"), "packer.required_version")
    match = re.fullmatch(r">=\s*(\d+)\.(\d+)\.(\d+)", required)
    assert match, f"packer.required_version: expected '>= x.y.z', got {required!r}"
    assert tuple(map(int, match.groups())) >= (1, 10, 0), f"required_version {required!r} is below 1.10"

    (plugins,) = blocks(body, "required_plugins", "packer")
    expected = {"amazon": "github.com/hashicorp/amazon", "ansible": "github.com/hashicorp/ansible"}
    for name, source in expected.items():
        assert name in plugins, f"required_plugins: {name} missing"
        plugin = plugins[name]
        assert literal(plugin.get("source"), f"plugin {name}.source") == source, f"plugin {name}: source"
        version = literal(plugin.get("version"), f"plugin {name}.version")
        assert re.fullmatch(r"=\s*\d+\.\d+\.\d+", version), (
            f"plugin {name}: version {version!r} must be an exact pin '= x.y.z'"
        )


# --- sources ----------------------------------------------------------------------------------


def test_exactly_the_four_sources(packer):
    assert set(packer.sources()) == {f"amazon-ebs.{name}" for name in SOURCES}


def test_each_family_file_holds_its_sources_and_data(packer):
    sources, data = packer.sources(), packer.data()
    for name, (family, _) in SOURCES.items():
        assert sources[f"amazon-ebs.{name}"].file == f"{family}.pkr.hcl", f"source {name}: wrong file"
        assert data[name].file == f"{family}.pkr.hcl", f"data {name}: wrong file"


@pytest.mark.parametrize("name", SOURCES)
def test_source_locks_down_imds_and_encrypts(packer, name):
    body = packer.sources()[f"amazon-ebs.{name}"].body
    where = f"source {name}"
    options = blocks(body, "metadata_options", where)
    assert len(options) == 1, f"{where}: expected one metadata_options block"
    (options,) = options
    assert literal(options.get("http_endpoint"), f"{where} http_endpoint") == "enabled", where
    assert literal(options.get("http_tokens"), f"{where} http_tokens") == "required", (
        f"{where}: the build instance must be IMDSv2 only"
    )
    assert options.get("http_put_response_hop_limit") == 1, f"{where}: hop limit must be 1"
    assert literal(body.get("imds_support"), f"{where} imds_support") == "v2.0", where
    assert body.get("encrypt_boot") is True, f"{where}: encrypt_boot must be true"
    assert expression(body.get("kms_key_id"), f"{where} kms_key_id") == "var.kms_key_id", where
    assert expression(body.get("deprecate_at"), f"{where} deprecate_at") == "local.deprecate_at", where


def test_deprecation_is_computed_from_the_build_time(packer):
    locals_ = packer.locals()
    assert expression(locals_.get("build_time"), "local.build_time") == "timestamp()"
    deprecate_at = expression(locals_.get("deprecate_at"), "local.deprecate_at")
    assert deprecate_at.startswith("timeadd(local.build_time,"), f"local.deprecate_at: {deprecate_at}"
    assert "var.deprecate_after_days" in deprecate_at, f"local.deprecate_at: {deprecate_at}"


@pytest.mark.parametrize("name", SOURCES)
def test_source_settings_come_from_variables(packer, name):
    body = packer.sources()[f"amazon-ebs.{name}"].body
    where = f"source {name}"
    _, arch = SOURCES[name]
    wired = {attribute: f"var.{attribute}" for attribute in (*SHARING, "region", "subnet_id")}
    wired["instance_type"] = f'var.instance_types["{arch}"]'
    for attribute, reference in wired.items():
        assert expression(body.get(attribute), f"{where} {attribute}") == reference, (
            f"{where}: {attribute} must be {reference}"
        )
    assert literal(body.get("ssh_username"), f"{where} ssh_username") == "ec2-user", where
    assert expression(body.get("ami_name"), f"{where} ami_name") == f'local.ami_names["{name}"]', where


def test_ami_names_are_prefix_source_name_and_build_stamp(packer):
    locals_ = packer.locals()
    names = expression(locals_.get("ami_names"), "local.ami_names")
    assert re.fullmatch(
        r"\{for (\w+) in keys\(local\.source_ami_parameters\) : \1 => "
        r'"\$\{var\.ami_name_prefix\}-\$\{\1\}-\$\{local\.build_stamp\}"\}',
        names,
    ), f"local.ami_names: {names}"
    stamp = expression(locals_.get("build_stamp"), "local.build_stamp")
    assert stamp.startswith("formatdate(") and "local.build_time" in stamp, f"local.build_stamp: {stamp}"
    parameters = {unquote(k) for k in resolve_local("local.source_ami_parameters", locals_, "ami_names")}
    assert parameters == set(SOURCES), "local.source_ami_parameters must have one key per source"


def test_ssm_data_sources_name_the_ecs_optimized_ami_of_their_variant(packer):
    data, locals_ = packer.data(), packer.locals()
    assert set(data) == set(SOURCES), "one amazon-parameterstore data source per source, same name"
    for name, block in data.items():
        where = f"data {name}"
        parameter = literal(block.body.get("name"), f"{where} name")
        assert parameter.startswith("/aws/service/ecs/optimized-ami/"), f"{where}: {parameter}"
        assert parameter == expected_parameter(name), f"{where}: {parameter} is not the {name} AMI"
        assert expression(block.body.get("region"), f"{where} region") == "var.region", where
        mirrored = resolve_local(f'local.source_ami_parameters["{name}"]', locals_, where)
        assert literal(mirrored, f'local.source_ami_parameters["{name}"]') == parameter, (
            f"{where}: local.source_ami_parameters disagrees with the data source"
        )


@pytest.mark.parametrize("name", SOURCES)
def test_build_volumes_carry_the_project_tag_the_build_role_requires(packer, name):
    body, locals_ = packer.sources()[f"amazon-ebs.{name}"].body, packer.locals()
    where = f"source {name} run_volume_tags"
    tags = resolve_local(expression(body.get("run_volume_tags"), where), locals_, where)
    assert isinstance(tags, dict), f"{where}: not an object"
    assert literal({unquote(k): v for k, v in tags.items()}["Project"], f"{where} Project") == PROJECT, where


@pytest.mark.parametrize("name", SOURCES)
def test_source_ami_comes_from_its_data_source(packer, name):
    body = packer.sources()[f"amazon-ebs.{name}"].body
    source_ami = expression(body.get("source_ami"), f"source {name} source_ami")
    assert source_ami == f"data.amazon-parameterstore.{name}.value", f"source {name}: {source_ami}"


@pytest.mark.parametrize("name", SOURCES)
@pytest.mark.parametrize("attribute", ["tags", "snapshot_tags", "run_tags"])
def test_source_tags_identify_the_build(packer, name, attribute):
    body, locals_ = packer.sources()[f"amazon-ebs.{name}"].body, packer.locals()
    where = f"source {name} {attribute}"
    family, arch = SOURCES[name]
    tags = resolve_tags(body.get(attribute), locals_, where)
    assert set(tags) >= REQUIRED_TAGS, f"{where}: missing {sorted(REQUIRED_TAGS - set(tags))}"

    assert literal(tags["Project"], f"{where} Project") == PROJECT, where
    assert literal(tags["OS"], f"{where} OS") == family, where
    assert literal(tags["Architecture"], f"{where} Architecture") == arch, where
    assert expression(tags["SourceAMI"], f"{where} SourceAMI") == expression(
        body.get("source_ami"), f"source {name} source_ami"
    ), f"{where}: SourceAMI must be the resolved source_ami"
    parameter = resolve_local(expression(tags["SourceAMIParameter"], where), locals_, where)
    assert literal(parameter, f"{where} SourceAMIParameter") == expected_parameter(name), where
    assert expression(tags["RoleVersion"], f"{where} RoleVersion") == "var.role_version", where
    assert expression(tags["GitCommit"], f"{where} GitCommit") == "var.git_commit", where
    assert expression(tags["BuildTime"], f"{where} BuildTime") == "local.build_time", where
    assert expression(tags["Name"], f"{where} Name") == expression(body.get("ami_name"), where), (
        f"{where}: Name must be the AMI name"
    )


# --- build ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build(packer) -> dict:
    builds = packer.builds()
    assert len(builds) == 1, f"expected one build block, found {len(builds)}"
    return builds[0].body


def test_build_lists_all_four_sources(build):
    listed = [literal(source, "build.sources") for source in build.get("sources", [])]
    assert sorted(listed) == sorted(f"source.amazon-ebs.{name}" for name in SOURCES), listed


def test_build_runs_the_golden_ami_playbook_with_ansible(build):
    provisioners = labelled(build.get("provisioner", []), 1, "build.pkr.hcl")
    ansible = [p.body for p in provisioners if p.labels == ("ansible",)]
    assert len(ansible) == 1, f"expected one ansible provisioner, found {[p.labels for p in provisioners]}"
    (body,) = ansible
    where = "provisioner ansible"

    playbook = resolved_path(body.get("playbook_file"), f"{where} playbook_file")
    assert playbook.as_posix().endswith("playbooks/golden-ami.yml"), f"{where}: {playbook}"
    assert playbook.is_file(), f"{where}: {playbook} does not exist"
    assert expression(body.get("command"), f"{where} command") == "var.ansible_playbook_command", where
    assert literal(body.get("user"), f"{where} user") == "ec2-user", where
    assert body.get("use_proxy") is False, f"{where}: use_proxy must be false"

    env = dict(template(item, f"{where} ansible_env_vars").split("=", 1) for item in body["ansible_env_vars"])
    config = resolved_path(f'"{env.get("ANSIBLE_CONFIG", "")}"', f"{where} ANSIBLE_CONFIG")
    assert config == (ROOT / "ansible.cfg").resolve() and config.is_file(), f"{where}: {config}"
    roles = resolved_path(f'"{env.get("ANSIBLE_ROLES_PATH", "")}"', f"{where} ANSIBLE_ROLES_PATH")
    assert (roles / "ecs_imds_block").is_dir(), f"{where}: {roles} lacks ecs_imds_block"


def test_build_writes_a_manifest_with_custom_data_per_source(packer, build):
    processors = labelled(build.get("post-processor", []), 1, "build.pkr.hcl")
    manifests = [p.body for p in processors if p.labels == ("manifest",)]
    assert len(manifests) == 1, (
        f"expected one manifest post-processor, found {[p.labels for p in processors]}"
    )
    (body,) = manifests
    where = "post-processor manifest"
    output = resolved_path(body.get("output"), f"{where} output")
    assert output == PACKER_DIR / "manifest.json", f"{where}: writes {output}"
    assert body.get("strip_path") is True, f"{where}: strip_path must be true"
    assert expression(body.get("custom_data"), f"{where} custom_data") == "local.manifest_data[source.name]"

    locals_ = packer.locals()
    data = expression(locals_.get("manifest_data"), "local.manifest_data")
    assert data.startswith("{for ") and " in local.variant_tags :" in data, f"local.manifest_data: {data}"
    for key in ("os", "architecture", "role_version", "git_commit", "source_ami_parameter"):
        assert re.search(rf"\b{key} = ", data), f"local.manifest_data: no {key}"
    variants = {unquote(k) for k in resolve_local("local.variant_tags", locals_, "manifest_data")}
    assert variants == set(SOURCES), "local.variant_tags needs one entry per source name"


def test_manifest_output_is_git_ignored():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "packer/manifest.json" in ignored, ".gitignore must list packer/manifest.json"


# --- variables --------------------------------------------------------------------------------


def test_every_variable_is_typed_and_described(packer):
    variables = packer.variables()
    assert variables, "no variables"
    for name, block in variables.items():
        assert block.file == "variables.pkr.hcl", f"variable {name} belongs in variables.pkr.hcl"
        assert type_constraint(block.body.get("type"), f"variable {name} type"), f"variable {name}: no type"
        description = literal(block.body.get("description"), f"variable {name} description")
        assert description.strip(), f"variable {name}: empty description"


def test_key_variables_are_validated(packer):
    variables = packer.variables()
    for name in sorted(VALIDATED):
        assert name in variables, f"variable {name} is not declared"
        assert blocks(variables[name].body, "validation", f"variable {name}"), (
            f"variable {name}: no validation"
        )


def test_validations_are_well_formed(packer):
    """What Packer checks at load time: self-reference only, constant one-sentence messages."""
    for name, block in packer.variables().items():
        for rule in blocks(block.body, "validation", f"variable {name}"):
            where = f"variable {name} validation"
            condition = expression(rule.get("condition"), f"{where} condition")
            references = set(re.findall(r"\bvar\.(\w+)", condition))
            assert references == {name}, f"{where}: may only refer to var.{name}, refers to {references}"
            message = literal(rule.get("error_message"), f"{where} error_message")
            assert message[:1].isupper() and message.endswith((".", "?")), (
                f"{where}: error_message must be a sentence: {message!r}"
            )


def test_every_variable_is_used_and_every_reference_declared(packer):
    declared = set(packer.variables())
    used = set()
    for file, text in packer.text.items():
        if file != "variables.pkr.hcl":
            used |= set(re.findall(r"\bvar\.(\w+)", text))
    assert used - declared == set(), f"undeclared variables: {sorted(used - declared)}"
    assert declared - used == set(), f"unused variables: {sorted(declared - used)}"


def test_every_local_and_data_reference_is_defined(packer):
    text = "\n".join(packer.text.values())
    assert set(re.findall(r"\blocal\.(\w+)", text)) <= set(packer.locals()), "undefined local"
    data_refs = set(re.findall(r"\bdata\.amazon-parameterstore\.([\w-]+)", text))
    assert data_refs <= set(packer.data()), f"undefined data sources: {data_refs - set(packer.data())}"


def test_release_vars_set_only_declared_variables_and_every_required_one(packer):
    variables = packer.variables()
    release = {k: v for k, v in load(RELEASE_VARS).items() if not k.startswith("__")}
    assert set(release) <= set(variables), f"undeclared: {sorted(set(release) - set(variables))}"
    required = {name for name, block in variables.items() if "default" not in block.body}
    assert required <= set(release), f"no value for {sorted(required - set(release))}"


# --- style ------------------------------------------------------------------------------------


def test_no_lone_interpolation_in_quotes(packer):
    """`var.x`, not `"${var.x}"`: HCL2 takes bare expressions."""
    noisy = re.compile(r'^"\$\{[^{}]*\}"$')

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{unquote(key)}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]")
        else:
            assert not (isinstance(node, str) and noisy.match(node)), f"{where}: write {node[1:-1]!r} bare"

    for file, doc in packer.parsed.items():
        walk(doc, file)


def test_packer_fmt_check():
    """Run by whatever `packer` is on PATH: Debian's 1.6.6 here, current Packer in CI."""
    binary = shutil.which("packer")
    if binary is None:
        pytest.fail("packer is not on PATH: install it (Debian: apt-get install packer) to check formatting")
    help_text = subprocess.run([binary, "fmt", "-h"], capture_output=True, text=True, check=False)
    command = [binary, "fmt", "-check"]
    if "-recursive" in help_text.stdout + help_text.stderr:
        command.append("-recursive")
    else:
        # Packer < 1.7 has no -recursive; it is moot while packer/ has no subdirectories.
        nested = [p for p in PACKER_DIR.rglob("*.hcl") if p.parent != PACKER_DIR]
        assert not nested, f"{binary} cannot check nested templates {nested}: upgrade Packer"
    result = subprocess.run([*command, "packer/"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, (
        f"`{' '.join(command)} packer/` failed; run `packer fmt -recursive packer/`:\n"
        f"{result.stdout}{result.stderr}"
    )
