"""A Hermes-style plugin whose module needs a package that is not installed (buslink's tests:
`check` names the module and the requirement that provides it)."""

import buslink_test_absent_package  # noqa: F401  (listed in requirements.txt, never installed)

from lib.plugins import AbstractMessageBusConsumerPlugin

HERMES_PLUGIN_CLASSNAME = "NeedsModulePlugin"


class NeedsModulePlugin(AbstractMessageBusConsumerPlugin):
    pass
