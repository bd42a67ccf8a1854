"""The VM template language: classic syntax, YAML and JSON spellings, and the validated VmSpec."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from stratus.model import template as template_module
from stratus.model.errors import InvalidInput, TemplateError
from stratus.model.template import (
    KNOWN_ATTRIBUTES,
    Template,
    Value,
    parse_template,
    vm_spec,
)

APPENDIX_B = """\
# comment
NAME   = web-1
CPU    = 0.5
MEMORY = 128          # MB, or with a unit: 512M, 2G
OS     = [ kernel="/vmlinuz",initrd= "/initrd.img",root="sda1" ]
DISK   = [ IMAGE = "debian", TARGET = "vda" ]
DISK   = [ source="/images/apache.img",target="sda",readonly="no" ]
NIC    = [ NETWORK = "private" ]
EC2 = [ AMI="ami-00bafcb5",
        KEYPAIR="gsg-keypair",
        ELASTICIP="75.101.155.97",
        AUTHORIZED_PORTS="22",
        INSTANCETYPE=m1.small ]
REQUIREMENTS = 'NAME = "ec2"'
SCHED_RANK = "FREE_CPU"
CONTEXT = [ HOSTNAME = "$NAME", FILES = "/a /b", SSH_PUBLIC_KEY = "ssh-rsa AAA..." ]
"""

APPENDIX_B_ITEMS: list[tuple[str, Value]] = [
    ("NAME", "web-1"),
    ("CPU", "0.5"),
    ("MEMORY", "128"),
    ("OS", {"KERNEL": "/vmlinuz", "INITRD": "/initrd.img", "ROOT": "sda1"}),
    ("DISK", {"IMAGE": "debian", "TARGET": "vda"}),
    ("DISK", {"SOURCE": "/images/apache.img", "TARGET": "sda", "READONLY": "no"}),
    ("NIC", {"NETWORK": "private"}),
    (
        "EC2",
        {
            "AMI": "ami-00bafcb5",
            "KEYPAIR": "gsg-keypair",
            "ELASTICIP": "75.101.155.97",
            "AUTHORIZED_PORTS": "22",
            "INSTANCETYPE": "m1.small",
        },
    ),
    ("REQUIREMENTS", 'NAME = "ec2"'),
    ("SCHED_RANK", "FREE_CPU"),
    ("CONTEXT", {"HOSTNAME": "$NAME", "FILES": "/a /b", "SSH_PUBLIC_KEY": "ssh-rsa AAA..."}),
]


def spec_of(text: str) -> object:
    return vm_spec(parse_template(text))


# --- classic syntax ------------------------------------------------------------------------------


def test_public_api_is_exactly_the_documented_names() -> None:
    assert sorted(template_module.__all__) == [
        "KNOWN_ATTRIBUTES",
        "Template",
        "Value",
        "Vector",
        "VmSpec",
        "parse_template",
        "vm_spec",
    ]


def test_appendix_b_template_parses_to_the_expected_items() -> None:
    assert parse_template(APPENDIX_B).items == APPENDIX_B_ITEMS


def test_single_quoted_requirements_keep_the_double_quotes_inside() -> None:
    template = parse_template("""REQUIREMENTS = 'NAME = "ec2" & CPU > 1'""")
    assert template.scalar("requirements") == 'NAME = "ec2" & CPU > 1'


def test_escapes_in_quoted_strings_are_resolved_and_other_backslashes_kept() -> None:
    template = parse_template(r"""A = "say \"hi\" \\ \d"
B = 'it\'s'
""")
    assert template.get("A") == 'say "hi" \\ \\d'
    assert template.get("B") == "it's"


def test_lower_case_names_and_vector_keys_are_upper_cased() -> None:
    template = parse_template('name = web\ndisk = [ image = "debian", Target = vda ]\n')
    assert template.items == [("NAME", "web"), ("DISK", {"IMAGE": "debian", "TARGET": "vda"})]
    assert template.get("Name") == "web"


def test_vector_may_span_lines_with_a_trailing_comma() -> None:
    template = parse_template(
        "DISK = [\n  IMAGE = debian,\n  TARGET = vda,\n]\nNIC = [ NETWORK = a ]"
    )
    assert template.vectors("DISK") == [{"IMAGE": "debian", "TARGET": "vda"}]
    assert template.vectors("NIC") == [{"NETWORK": "a"}]


def test_repeated_disk_keeps_every_value_in_order() -> None:
    template = parse_template("DISK = [ IMAGE = a ]\nNAME = x\nDISK = [ IMAGE = b ]\n")
    assert template.get("DISK") == {"IMAGE": "a"}
    assert template.get_all("disk") == [{"IMAGE": "a"}, {"IMAGE": "b"}]
    assert [name for name, _ in template.items] == ["DISK", "NAME", "DISK"]


def test_comments_are_ignored_everywhere_except_inside_quotes() -> None:
    text = """# leading comment
  # indented comment

NAME = web # after a value
DISK = [ # after the bracket
  IMAGE = "a # not a comment", # after a pair
  # on its own line inside the vector
  TARGET = vda#touching
] # after the closing bracket
# trailing comment"""
    assert parse_template(text).items == [
        ("NAME", "web"),
        ("DISK", {"IMAGE": "a # not a comment", "TARGET": "vda"}),
    ]


def test_quoted_string_may_span_lines() -> None:
    template = parse_template('DESCRIPTION = "first line\nsecond line"\nCPU = 1\n')
    assert template.get("DESCRIPTION") == "first line\nsecond line"
    assert template.get("CPU") == "1"


def test_empty_vector_and_empty_string_are_values() -> None:
    template = parse_template('OS = []\nCONTEXT = [ ]\nDESCRIPTION = ""\n')
    assert template.items == [("OS", {}), ("CONTEXT", {}), ("DESCRIPTION", "")]


def test_unquoted_values_may_hold_equals_signs_colons_and_dollars() -> None:
    template = parse_template("USER_DATA = aGVsbG8=\nURL = http://x:80/a\nHOSTNAME = $NAME\n")
    assert template.items == [
        ("USER_DATA", "aGVsbG8="),
        ("URL", "http://x:80/a"),
        ("HOSTNAME", "$NAME"),
    ]


def test_windows_line_endings_and_byte_order_mark_are_accepted() -> None:
    template = parse_template("\ufeffNAME = web\r\nDISK = [ IMAGE = a,\r\n TARGET = b ]\r\n")
    assert template.items == [("NAME", "web"), ("DISK", {"IMAGE": "a", "TARGET": "b"})]


def test_empty_template_has_no_items() -> None:
    assert parse_template("  # only a comment\n\n").items == []


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        ("NAME web\n", 1, 6, "expected '=' after attribute name NAME, found 'web'"),
        ('NAME = a\nDESCRIPTION = "never closed\nCPU = 1\n', 2, 15, "unterminated string"),
        (
            "NAME = a\nCPU = 1\nDISK = [ IMAGE = x\nNIC = [ NETWORK = y ]\n",
            4,
            1,
            "expected ']' to close the vector DISK opened at line 3",
        ),
        ("NAME = my web server\n", 1, 11, "expected the end of the line after the value of NAME"),
        ("DISK = [ IMAGE = a TARGET = b ]", 1, 20, "expected ',' or ']' after the value of IMAGE"),
        ("CPU = 1\n= 5\n", 2, 1, "expected an attribute name, found '='"),
        ("NAME =\nCPU = 1\n", 1, 7, "expected a value after 'NAME ='"),
        ("DISK = [ IMAGE = a, image = b ]", 1, 21, "key IMAGE appears twice in the vector DISK"),
        ("DISK = [ IMAGE = ", 1, 18, "expected ']' to close the vector DISK opened at line 1"),
        ("DISK = [ = x ]", 1, 10, "expected a key inside the vector DISK"),
        ("DISK = [ A = [ B = c ] ]", 1, 14, "a vector cannot hold a vector"),
        ("1CPU = 2", 1, 1, "expected an attribute name, found '1CPU'"),
    ],
)
def test_malformed_classic_template_names_line_column_and_what_was_expected(
    text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template(text, source="web.tpl")
    error = caught.value
    assert (error.line, error.column) == (line, column)
    assert message in str(error)
    assert str(error).startswith(f"web.tpl:{line}:{column}: ")
    assert error.details() == {"line": line, "column": column}


def test_unterminated_string_error_points_at_the_opening_quote_and_says_how_to_fix() -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template("A = 'abc\n")
    assert (caught.value.line, caught.value.column) == (1, 5)
    assert "close it with '" in str(caught.value)


# --- to_text, to_dict, from_dict -----------------------------------------------------------------


def test_to_text_quotes_only_values_that_need_it() -> None:
    template = Template(
        [
            ("NAME", "web-1"),
            ("REQUIREMENTS", 'NAME = "ec2"'),
            ("DESCRIPTION", "two words"),
            ("EMPTY", ""),
            ("DISK", {"SOURCE": "/images/a.img", "TARGET": "sda"}),
        ]
    )
    assert template.to_text() == (
        "NAME = web-1\n"
        "REQUIREMENTS = 'NAME = \"ec2\"'\n"
        'DESCRIPTION = "two words"\n'
        'EMPTY = ""\n'
        "DISK = [ SOURCE = /images/a.img, TARGET = sda ]\n"
    )


def test_appendix_b_survives_every_round_trip() -> None:
    template = parse_template(APPENDIX_B)
    assert parse_template(template.to_text()) == template
    assert Template.from_dict(json.loads(json.dumps(template.to_dict()))) == template
    assert parse_template(yaml.safe_dump(template.to_dict()), format="yaml") == template


def test_to_dict_turns_a_repeated_attribute_into_a_list() -> None:
    template = parse_template("NAME = a\nDISK = [ IMAGE = x ]\nDISK = [ IMAGE = y ]\n")
    assert template.to_dict() == {"NAME": "a", "DISK": [{"IMAGE": "x"}, {"IMAGE": "y"}]}


def test_from_dict_writes_numbers_as_text_and_booleans_as_yes_no() -> None:
    template = Template.from_dict({"cpu": 0.5, "memory": 2, "disk": {"readonly": False}})
    assert template.items == [("CPU", "0.5"), ("MEMORY", "2"), ("DISK", {"READONLY": "NO"})]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"NAME": None}, "NAME has no value"),
        ({"DISK": {"IMAGE": {"NAME": "x"}}}, "DISK.IMAGE is nested too deeply"),
        ({"DISK": [["a"]]}, "DISK is nested too deeply"),
        ({"disk": "a", "DISK": "b"}, "attribute DISK is given twice"),
        ({"1X": "a"}, "'1X' is not a valid attribute name"),
        ({"DISK": {"a": "1", "A": "2"}}, "key A appears twice in the vector DISK"),
    ],
)
def test_from_dict_refuses_what_the_template_cannot_hold(
    data: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        Template.from_dict(data, source="api")


def test_template_refuses_invalid_names_and_values() -> None:
    with pytest.raises(InvalidInput, match="not a valid attribute name"):
        Template([("NO SPACES", "x")])
    with pytest.raises(InvalidInput, match="must be text"):
        Template([("DISK", {"SIZE": 3})])  # type: ignore[dict-item]


def test_templates_are_equal_with_each_attributes_values_in_the_same_order() -> None:
    first = Template([("DISK", {"IMAGE": "a"}), ("NAME", "x"), ("DISK", {"IMAGE": "b"})])
    # The order between different attributes carries no meaning (YAML dumpers sort keys).
    assert first == Template([("name", "x"), ("disk", {"image": "a"}), ("DISK", {"IMAGE": "b"})])
    assert first != Template([("DISK", {"IMAGE": "b"}), ("NAME", "x"), ("DISK", {"IMAGE": "a"})])
    assert first != Template([("DISK", {"IMAGE": "a"}), ("DISK", {"IMAGE": "b"})])
    assert first != "DISK"


def test_scalar_and_vectors_refuse_the_wrong_shape() -> None:
    template = parse_template("NAME = [ A = b ]\nDISK = a\n")
    with pytest.raises(InvalidInput, match="NAME must be a single value"):
        template.scalar("name")
    with pytest.raises(InvalidInput, match="DISK must be a vector"):
        template.vectors("disk")


# --- YAML and JSON -------------------------------------------------------------------------------

APPENDIX_B_YAML = """\
# the same template in YAML
NAME: web-1
CPU: 0.5
memory: 128
OS: {kernel: /vmlinuz, initrd: /initrd.img, root: sda1}
DISK:
  - {IMAGE: debian, TARGET: vda}
  - source: /images/apache.img
    target: sda
    readonly: "no"
NIC: {NETWORK: private}
EC2:
  AMI: ami-00bafcb5
  KEYPAIR: gsg-keypair
  ELASTICIP: 75.101.155.97
  AUTHORIZED_PORTS: 22
  INSTANCETYPE: m1.small
REQUIREMENTS: 'NAME = "ec2"'
SCHED_RANK: FREE_CPU
CONTEXT: {HOSTNAME: $NAME, FILES: /a /b, SSH_PUBLIC_KEY: ssh-rsa AAA...}
"""


def test_yaml_equivalent_equals_the_classic_template() -> None:
    assert parse_template(APPENDIX_B_YAML) == parse_template(APPENDIX_B)
    assert parse_template(APPENDIX_B_YAML, format="yaml").items == APPENDIX_B_ITEMS


def test_json_equivalent_equals_the_classic_template() -> None:
    data = json.loads(json.dumps(dict(yaml.safe_load(APPENDIX_B_YAML))))
    text = "\n  " + json.dumps(data, indent=2)
    assert parse_template(text) == parse_template(APPENDIX_B)
    assert parse_template(text, format="json").items == APPENDIX_B_ITEMS


def test_yaml_booleans_become_yes_or_no() -> None:
    assert parse_template("DISK:\n  READONLY: no\n  SHARED: true\n").items == [
        ("DISK", {"READONLY": "NO", "SHARED": "YES"})
    ]


def test_nested_too_deep_yaml_is_refused_naming_the_attribute() -> None:
    with pytest.raises(InvalidInput, match=re.escape("DISK.IMAGE is nested too deeply")):
        parse_template("DISK:\n  IMAGE:\n    NAME: debian\n")


def test_yaml_syntax_error_names_line_and_column() -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template("NAME: web\nDISK: [IMAGE: a\nCPU: 1\n", format="yaml")
    assert caught.value.line == 3
    assert caught.value.column == 4
    assert "invalid YAML" in str(caught.value)


def test_json_syntax_error_names_line_and_column() -> None:
    with pytest.raises(TemplateError) as caught:
        parse_template('{\n  "NAME": "web",\n  "CPU" 1\n}')
    assert (caught.value.line, caught.value.column) == (3, 9)
    assert "invalid JSON: Expecting ':' delimiter" in str(caught.value)


def test_json_repeated_key_is_refused_instead_of_dropping_a_value() -> None:
    with pytest.raises(InvalidInput, match="key DISK appears twice"):
        parse_template('{"DISK": {"IMAGE": "a"}, "DISK": {"IMAGE": "b"}}')


def test_yaml_or_json_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be a mapping"):
        parse_template("- a\n- b\n", format="yaml")
    with pytest.raises(InvalidInput, match="must be a mapping"):
        parse_template("[1, 2]", format="json")


def test_auto_format_tells_the_three_spellings_apart() -> None:
    expected = Template([("NAME", "web"), ("CPU", "1")])
    assert parse_template("# yaml\n\nNAME: web\nCPU: 1\n") == expected
    assert parse_template('  {"NAME": "web", "CPU": 1}') == expected
    assert parse_template("# classic\nNAME = web\nCPU = 1\n") == expected
    assert parse_template("NAME = 'a: b'\n").get("NAME") == "a: b"


def test_unknown_format_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown template format 'toml'"):
        parse_template("NAME = a", format="toml")


# --- round-trip properties -----------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,12}", fullmatch=True)
any_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)  # no lone surrogates
tricky_text = st.sampled_from(
    ["", "yes", "NO", "0.5", "2", "$NAME", 'a "b"', "it's", "\\", "\\'", "#x", "[", "]", ",", "a=b"]
)
texts = any_text | tricky_text
vectors = st.dictionaries(names.map(str.upper), texts, max_size=4)
templates = st.lists(st.tuples(names, texts | vectors), max_size=8).map(Template)


@given(templates)
def test_classic_text_parses_back_to_an_equal_template(template: Template) -> None:
    assert parse_template(template.to_text(), format="classic") == template
    assert parse_template(template.to_text()) == template


@given(templates)
def test_json_form_reads_back_to_an_equal_template(template: Template) -> None:
    assert Template.from_dict(json.loads(json.dumps(template.to_dict()))) == template


@given(templates)
def test_yaml_form_reads_back_to_an_equal_template(template: Template) -> None:
    assert parse_template(yaml.safe_dump(template.to_dict()), format="yaml") == template


# --- the validated view --------------------------------------------------------------------------


def test_vm_spec_of_appendix_b_types_every_known_attribute() -> None:
    spec = vm_spec(parse_template(APPENDIX_B))
    assert (spec.name, spec.cpu, spec.vcpu, spec.memory) == ("web-1", 0.5, 1, 128)
    assert spec.disks == [item for name, item in APPENDIX_B_ITEMS if name == "DISK"]
    assert spec.nics == [{"NETWORK": "private"}]
    assert spec.os["KERNEL"] == "/vmlinuz"
    assert spec.context["HOSTNAME"] == "$NAME"
    assert (spec.requirements, spec.rank, spec.user_priority) == ('NAME = "ec2"', "FREE_CPU", 0)
    assert spec.providers[0]["TYPE"] == "ec2"
    assert spec.warnings == []


def test_unknown_attribute_is_kept_with_a_warning() -> None:
    template = parse_template("MEMORY = 64\nFOO = bar\nFOO = baz\nHYPERVISOR_X = [ A = b ]\n")
    spec = vm_spec(template)
    assert spec.warnings == [
        "unknown attribute FOO kept as is",
        "unknown attribute HYPERVISOR_X kept as is",
    ]
    assert template.get_all("FOO") == ["bar", "baz"]
    assert "FOO = baz" in template.to_text()


@pytest.mark.parametrize(
    ("memory", "megabytes"), [("128", 128), ("512M", 512), ("2G", 2048), ("1.5GiB", 1536)]
)
def test_memory_accepts_megabytes_or_a_unit(memory: str, megabytes: int) -> None:
    assert vm_spec(parse_template(f"MEMORY = {memory}")).memory == megabytes


def test_missing_memory_says_what_to_add() -> None:
    with pytest.raises(InvalidInput, match=re.escape("MEMORY is missing: add e.g. MEMORY = 512")):
        vm_spec(parse_template("NAME = web\nCPU = 1\n"))


@pytest.mark.parametrize("memory", ["lots", "2X", "0", "-1"])
def test_bad_memory_is_refused_naming_memory(memory: str) -> None:
    with pytest.raises(InvalidInput, match="MEMORY"):
        vm_spec(parse_template(f"MEMORY = {memory}"))


@pytest.mark.parametrize("cpu", ["abc", "-1", "0", "nan", "inf"])
def test_bad_cpu_is_refused_naming_cpu_and_the_value(cpu: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        vm_spec(parse_template(f"MEMORY = 64\nCPU = {cpu}\n"))
    assert f"CPU = '{cpu}' is not valid: expected a number greater than 0" in str(caught.value)


def test_cpu_defaults_to_vcpu_and_vcpu_to_one() -> None:
    assert (vm_spec(parse_template("MEMORY = 64")).cpu, 1.0) == (1.0, 1.0)
    spec = vm_spec(parse_template("MEMORY = 64\nVCPU = 4\n"))
    assert (spec.cpu, spec.vcpu) == (4.0, 4)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("VCPU = 1.5", "VCPU = '1.5' is not valid: expected a whole number of at least 1"),
        ("VCPU = 0", "VCPU = '0' is not valid"),
        ("USER_PRIORITY = 1001", "USER_PRIORITY = '1001' is not valid: .* from -1000 to 1000"),
        ("NAME = a\nNAME = b", "NAME appears 2 times"),
        ("CONTEXT = [ A = 1 ]\nCONTEXT = [ B = 2 ]", "CONTEXT appears 2 times"),
        ("DISK = debian", "DISK must be a vector, not the value 'debian'"),
        ("CPU = [ A = 1 ]", "CPU must be a single value"),
        (
            "REQUIREMENTS = 'A'\nSCHED_REQUIREMENTS = 'B'",
            "both SCHED_REQUIREMENTS and REQUIREMENTS",
        ),
        ("RANK = A\nSCHED_RANK = B", "both SCHED_RANK and RANK"),
        ("PUBLIC_CLOUD = [ REGION = x ]", "PUBLIC_CLOUD section has no TYPE"),
        ("EC2 = [ TYPE = azure ]", "EC2 section has TYPE = 'azure'"),
    ],
)
def test_invalid_attribute_is_refused_naming_it(line: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        vm_spec(parse_template(f"MEMORY = 64\n{line}\n"))


def test_older_spellings_of_requirements_and_rank_are_read() -> None:
    spec = vm_spec(parse_template("MEMORY = 64\nREQUIREMENTS = 'CPU > 1'\nRANK = FREE_CPU\n"))
    assert (spec.requirements, spec.rank) == ("CPU > 1", "FREE_CPU")
    spec = vm_spec(parse_template("MEMORY = 64\nSCHED_REQUIREMENTS = 'CPU > 1'\n"))
    assert (spec.requirements, spec.rank) == ("CPU > 1", "")


def test_user_priority_is_read_within_its_range() -> None:
    assert vm_spec(parse_template("MEMORY = 64\nUSER_PRIORITY = -1000\n")).user_priority == -1000


def test_providers_collect_ec2_and_public_cloud_sections_with_their_type() -> None:
    spec = vm_spec(
        parse_template(
            "MEMORY = 64\n"
            'EC2 = [ AMI = ami-1, REGION = "us-east-1" ]\n'
            "PUBLIC_CLOUD = [ TYPE = azure, SIZE = small ]\n"
            "EC2 = [ AMI = ami-2, TYPE = EC2 ]\n"
        )
    )
    assert spec.providers == [
        {"AMI": "ami-1", "REGION": "us-east-1", "TYPE": "ec2"},
        {"TYPE": "azure", "SIZE": "small"},
        {"AMI": "ami-2", "TYPE": "EC2"},
    ]


def test_known_attributes_cover_what_vm_spec_reads() -> None:
    read = {"NAME", "CPU", "VCPU", "MEMORY", "DISK", "NIC", "OS", "CONTEXT", "USER_PRIORITY"}
    renamed = {"SCHED_REQUIREMENTS", "REQUIREMENTS", "SCHED_RANK", "RANK", "EC2", "PUBLIC_CLOUD"}
    assert read | renamed <= KNOWN_ATTRIBUTES


@given(st.text(st.sampled_from(list("Aa1_-=[],\"'\\# \n\t:.$")), max_size=60))
def test_any_text_either_parses_or_raises_a_template_error(text: str) -> None:
    try:
        template = parse_template(text, format="classic")
    except TemplateError as error:
        assert error.line >= 1 and error.column >= 1
    else:
        assert parse_template(template.to_text(), format="classic") == template
