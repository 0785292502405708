"""The one place that teaches the installed PEFT new method types.

PEFT's public `register_peft_method` fills its config, tuner and prefix mappings, but only accepts a name whose
upper-case form is already a member of `peft.PeftType`, a `str` enum with no public way to add members. Out-of-tree
methods therefore have to add the enum member themselves. `register_method` does exactly that, once and
idempotently, and then calls the public `register_peft_method` so that everything else (`get_peft_model`,
`PeftConfig.from_pretrained`, `PeftModel.from_pretrained`, `AutoPeftModel*`) goes through PEFT's own code.

`tests/test_peft_registry.py` pins the enum internals used here, so that a PEFT or Python release that changes them
fails loudly in the test suite instead of silently at a user's `from_pretrained`.
"""

from __future__ import annotations

from peft import PeftConfig
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import PeftType, register_peft_method


def add_peft_type(name: str) -> PeftType:
    """Return the `PeftType` member called `name` (upper case), adding it to the enum if it is missing.

    The new member is indistinguishable from a built-in one: `PeftType(name)`, `PeftType[name]`,
    `getattr(PeftType, name)`, iteration and membership all find it, and it equals the plain string `name`, which
    is how it is written to `adapter_config.json`.
    """
    if not name.isupper() or not name.isidentifier():
        raise ValueError(f"A PeftType name must be an upper-case identifier, got {name!r}.")
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member._sort_order_ = len(PeftType._member_names_)
    if hasattr(PeftType, "_add_member_"):  # Python >= 3.12 keeps members behind descriptors
        PeftType._add_member_(name, member)
    else:
        PeftType._member_map_[name] = member
        type.__setattr__(PeftType, name, member)
    PeftType._member_names_.append(name)
    PeftType._value2member_map_[name] = member
    return member


def register_method(name: str, config_cls: type[PeftConfig], model_cls: type[BaseTuner]) -> PeftType:
    """Make the PEFT method `name` (lower case) known to PEFT; calling it again with the same classes is a no-op.

    Raises:
        ValueError: if `name` is already registered with other classes, e.g. by a future PEFT release that ships a
            method of the same name.
    """
    peft_type = add_peft_type(name.upper())
    registered = (PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type), PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type))
    if registered == (config_cls, model_cls):
        return peft_type
    if registered != (None, None):
        raise ValueError(
            f"PEFT method {name!r} is already registered with {registered[0]} / {registered[1]}; refusing to "
            f"replace it with {config_cls} / {model_cls}."
        )
    register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls, prefix=model_cls.prefix)
    return peft_type
