"""gptjax renders a Hugging Face chat template to the very text transformers renders, in
the same sandbox (gptjax.jinja_template)."""

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from gptjax.errors import DataError
from gptjax.jinja_template import render_text

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}
MESSAGES = [
    {"role": "system", "content": "Be brief & <exact>."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
]
# Block tags on their own lines (trim_blocks/lstrip_blocks), loop controls, a namespace,
# tojson (which must not escape & and <), an undefined `tools` tested against none.
TEMPLATE = """{{ bos_token }}
{% set ns = namespace(users=0) %}
{% for message in messages %}
    {% if message['role'] == 'system' %}
        {{ message['content'] | tojson }}
        {% continue %}
    {% endif %}
    {% if message['role'] == 'user' %}{% set ns.users = ns.users + 1 %}{% endif %}
[{{ message['role'] }}] {{ message['content'] }}{{ eos_token }}
{% endfor %}
{% if tools is not none %}tools!{% endif %}
users={{ ns.users }}
{% if add_generation_prompt %}[assistant]{% endif %}"""


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_text_equals_transformers_rendering(add_generation_prompt):
    expected, _ = render_jinja_template(
        [MESSAGES], chat_template=TEMPLATE, add_generation_prompt=add_generation_prompt, **SPECIAL
    )
    got = render_text(
        TEMPLATE, MESSAGES, add_generation_prompt=add_generation_prompt, special_tokens=SPECIAL
    )
    assert got == expected[0]
    assert '"Be brief & <exact>."' in got and "tools!" not in got


@pytest.mark.parametrize(
    "template, reason",
    [
        ("{{ raise_exception('roles must alternate') }}", "roles must alternate"),
        ("{{ ''.__class__.__mro__ }}", "unsafe"),  # the sandbox refuses Python internals
        ("{% for m in messages %}{{ m.content.append(1) }}{% endfor %}", "str object"),
    ],
)
def test_a_refusing_or_unsafe_template_is_one_data_error(template, reason):
    with pytest.raises(DataError, match=reason) as error:
        render_text(template, MESSAGES, add_generation_prompt=True, special_tokens=SPECIAL)
    assert "\n" not in str(error.value)
