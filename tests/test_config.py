"""Config: every shipped YAML validates; overrides apply; unknown keys fail with the valid ones listed."""

from __future__ import annotations

import pytest

from ded_ray.config import ConfigError, apply_override, load_config, shipped_configs


def test_shipped_configs_exist():
    names = {p.name for p in shipped_configs()}
    assert {"demo.yaml", "ded-32b.yaml"} <= names


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: p.name)
def test_every_shipped_config_validates_and_starts_with_its_command(path):
    config = load_config(path)
    assert config.run.name
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# ") and any(cmd in first_line for cmd in ("ded ", "make ", "ray job submit")), first_line


def test_default_is_demo():
    assert load_config().run.name == "demo"


def test_paper_recipe_values():
    c = load_config("ded-32b")
    assert c.teacher == "QwQ-32B"
    assert c.student.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
    assert c.rollout.samples_per_question == 8 and c.curate.diversity.per_question == 4
    assert c.verify.max_tokens == 16384 and c.train.max_seq_len == 16384
    assert c.train.learning_rate == 1e-5 and c.train.epochs == 10 and c.train.global_batch_size == 48
    assert c.train.zero_stage == 3 and c.train.num_workers == 8 and c.train.bf16


def test_overrides_parse_yaml_values_and_index_lists():
    c = load_config(None, ["rollout.samples_per_question=7", "rollout.concurrency=[1, 3]",
                           "teachers.1.sampling.temperature=0.3", "run.name=other"])
    assert c.rollout.samples_per_question == 7
    assert c.rollout.concurrency == (1, 3)
    assert c.teachers[1].sampling.temperature == 0.3
    assert c.run.name == "other"


def test_unknown_key_names_key_and_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["curate.diversity.per_questoin=3"])
    message = str(err.value)
    assert "curate.diversity.per_questoin" in message
    assert "per_question" in message and "unit" in message


def test_bad_value_names_key():
    with pytest.raises(ConfigError, match="rollout.samples_per_question"):
        load_config(None, ["rollout.samples_per_question=0"])


def test_unknown_domain_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"problems.sources.0.domain.*'physics'.*\('math', 'code', 'science'\)"):
        load_config(None, ["problems.sources.0.domain=physics"])


def test_unknown_teacher_is_rejected():
    with pytest.raises(ConfigError, match="not among the configured teachers"):
        load_config(None, ["teacher=nobody"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_override({}, "no-equals-sign")
    with pytest.raises(ConfigError, match="index 5"):
        apply_override({"teachers": [{}]}, "teachers.5.name=x")


def test_missing_config_file_names_shipped_ones():
    with pytest.raises(ConfigError, match="demo.yaml"):
        load_config("does-not-exist.yaml")


def test_override_one_past_the_end_appends():
    c = load_config(None, ["teachers.2={name: extra, endpoint: 'http://127.0.0.1:1/v1', model: m}"])
    assert [t.name for t in c.teachers][-1] == "extra" and c.teachers[2].endpoint.endswith("/v1")


def test_prompt_settings_per_domain_name_known_domains():
    c = load_config(None, ["student.system_prompt={math: 'Box it.', code: 'Write Python.'}",
                           "teachers.0.few_shot={'*': [{user: q, assistant: a}], code: []}"])
    assert c.student.system_prompt == {"math": "Box it.", "code": "Write Python."}
    assert c.teachers[0].few_shot["*"][0].user == "q" and c.teachers[0].few_shot["code"] == []
    with pytest.raises(ConfigError, match=r"student.system_prompt.*'physics'"):
        load_config(None, ["student.system_prompt={physics: x}"])
