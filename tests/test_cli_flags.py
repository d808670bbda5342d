"""One spelling per option across the verbs: an option two verbs share has the same name in
both, and a renamed option's old spelling keeps working, hidden from --help."""

import argparse

import pytest

from gptjax import cli


def _verb_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every leaf parser by its command line (`train`, `tokenizer train`, ...)."""
    found, pending = {}, [("", cli._parser())]
    while pending:
        prefix, parser = pending.pop()
        subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subcommands:
            found[prefix.strip()] = parser
        for action in subcommands:
            pending += [(f"{prefix} {name}", sub) for name, sub in action.choices.items()]
    return found


def _visible_flags(parser) -> dict[str, tuple[str, ...]]:
    """{dest: its option strings} for every option --help shows."""
    return {
        action.dest: tuple(action.option_strings)
        for action in parser._actions
        if action.option_strings and action.help != argparse.SUPPRESS and action.dest != "help"
    }


def test_an_option_shared_by_verbs_is_spelled_the_same_in_each():
    spellings: dict[str, dict[tuple[str, ...], list[str]]] = {}
    for verb, parser in _verb_parsers().items():
        for dest, strings in _visible_flags(parser).items():
            spellings.setdefault(dest, {}).setdefault(strings, []).append(verb)
    differing = {dest: ways for dest, ways in spellings.items() if len(ways) > 1}
    assert differing == {}
    # The pair that differed: prepare's --tokenizer-type was tokenizer train's --type.
    assert spellings["tokenizer_type"] == {("--tokenizer-type",): ["prepare", "tokenizer train"]}


def test_visible_long_options_use_hyphens_or_carry_a_hyphen_spelling():
    for verb, parser in _verb_parsers().items():
        for strings in _visible_flags(parser).values():
            assert any("_" not in s for s in strings), (verb, strings)


@pytest.mark.parametrize("spelling", ["--tokenizer-type", "--type"])
def test_tokenizer_train_takes_the_old_spelling_too(spelling, capsys):
    argv = ["tokenizer", "train", "--source", "builtin", "--out", "t", "--vocab-size", "300"]
    args = cli._parser().parse_args([*argv, spelling, "char"])
    assert args.tokenizer_type == "char"
    assert cli._parser().parse_args(argv).tokenizer_type == "bpe"  # the default
    with pytest.raises(SystemExit):
        cli.main(["tokenizer", "train", "--help"])
    help_text = capsys.readouterr().out
    assert "--tokenizer-type" in help_text and "--type" not in help_text
