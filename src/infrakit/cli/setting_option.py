"""Command-line options that give a setting of :mod:`infrakit.settings` instead of its
environment variable: parsed by the setting itself, so that both take the same values, and
refused naming the option or the variable, as the user gave it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from infrakit.settings import Setting, SettingError

F = TypeVar("F", bound=Callable[..., Any])


def parsed_by(setting: Setting[Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """An option's callback: its value parsed by its setting; a bad one is named as the
    user gave it, option or variable. A repeatable option's values are parsed one by one
    and joined."""

    def parse(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        from_env = ctx.get_parameter_source(str(param.name)) is ParameterSource.ENVIRONMENT
        name = setting.env if from_env else setting.option
        try:
            if setting.repeatable:
                return tuple(item for raw in value or (setting.default,)
                             for item in setting.value(raw, name))
            return setting.value(value, name)
        except SettingError as exc:
            raise click.UsageError(str(exc), ctx) from None

    return parse


def _flag_parsed_by(setting: Setting[Any]
                    ) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A flag's callback: on when given; else what its variable says, parsed by the
    setting (click's own reading of a flag's variable would take a bad value silently)."""

    def parse(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if ctx.get_parameter_source(str(param.name)) is ParameterSource.COMMANDLINE:
            return True
        try:
            return setting.value(os.environ.get(setting.env, setting.default))
        except SettingError as exc:
            raise click.UsageError(str(exc), ctx) from None

    return parse


def setting_option(setting: Setting[Any], field: str) -> Callable[[F], F]:
    """The option of ``setting``, passed to the command as ``field``."""
    if setting.flag:
        return click.option(setting.option, field, is_flag=True, flag_value="yes",
                            default=setting.default, callback=_flag_parsed_by(setting),
                            envvar=setting.env, show_envvar=True, help=setting.help)
    return click.option(setting.option, field,
                        default=() if setting.repeatable else setting.default,
                        multiple=setting.repeatable, callback=parsed_by(setting),
                        envvar=setting.env,
                        show_default=bool(setting.default), show_envvar=True,
                        metavar=setting.metavar, help=setting.help)
