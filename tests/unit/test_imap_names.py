"""Portable mailbox names (imap/names.py): "/" between levels, relative to the personal namespace."""

from __future__ import annotations

import random

import pytest

from mailrules.dsl.parser import parse_text
from mailrules.dsl.semantics import sanitize_value
from mailrules.imap.names import Namespaces, ServerName, UnportableName, check_names, describe

# The NAMESPACE answers measured on the test servers (docs/dev/cyrus.md, imap-notes (d)).
DOVECOT = Namespaces.from_response([("", "/")])
STD_DOT = Namespaces.from_response([("INBOX.", ".")], ([("user.", ".")], [("", ".")]))
STD_SLASH = Namespaces.from_response([("INBOX/", "/")], ([("user/", "/")], [("", "/")]))
ALT_DOT = Namespaces.from_response([("", ".")], ([("Other Users.", ".")], [("Shared Folders.", ".")]))
ALT_SLASH = Namespaces.from_response([("", "/")], ([("Other Users/", "/")], [("Shared Folders/", "/")]))
PYMAP = Namespaces.from_list_root("/")  # no NAMESPACE: LIST "" "" gives "/"
FLAT = Namespaces.from_list_root(None)
ALL = {
    "dovecot": DOVECOT,
    "std-dot": STD_DOT,
    "std-slash": STD_SLASH,
    "alt-dot": ALT_DOT,
    "alt-slash": ALT_SLASH,
    "pymap": PYMAP,
}

# portable name -> server name on each (None: refused)
MAPPING: dict[str, dict[str, str | None]] = {
    "Lists/python": {
        "dovecot": "Lists/python",
        "std-dot": "INBOX.Lists.python",
        "std-slash": "INBOX/Lists/python",
        "alt-dot": "Lists.python",
        "alt-slash": "Lists/python",
        "pymap": "Lists/python",
    },
    "Trash": {
        "dovecot": "Trash",
        "std-dot": "INBOX.Trash",
        "std-slash": "INBOX/Trash",
        "alt-dot": "Trash",
        "alt-slash": "Trash",
        "pymap": "Trash",
    },
    "INBOX": {k: "INBOX" for k in ALL},
    "inbox": {k: "INBOX" for k in ALL},
    "INBOX/Sub": {
        "dovecot": "INBOX/Sub",
        "std-dot": "INBOX.Sub",
        "std-slash": "INBOX/Sub",
        "alt-dot": "INBOX.Sub",
        "alt-slash": "INBOX/Sub",
        "pymap": "INBOX/Sub",
    },
    "Inbox/Sub": {
        "dovecot": "INBOX/Sub",
        "std-dot": "INBOX.Sub",
        "std-slash": "INBOX/Sub",
        "alt-dot": "INBOX.Sub",
        "alt-slash": "INBOX/Sub",
        "pymap": "INBOX/Sub",
    },
    # the server's own form, prefix included: taken as is
    "INBOX.Lists.python": {
        "dovecot": "INBOX.Lists.python",
        "std-dot": "INBOX.Lists.python",
        "std-slash": "INBOX/INBOX.Lists.python",
        "alt-dot": None,
        "alt-slash": "INBOX.Lists.python",
        "pymap": "INBOX.Lists.python",
    },
    "v1.2": {
        "dovecot": "v1.2",
        "std-dot": None,
        "std-slash": "INBOX/v1.2",
        "alt-dot": None,
        "alt-slash": "v1.2",
        "pymap": "v1.2",
    },
    # another namespace's prefix: as is
    "user.bob.Shared": {
        "dovecot": "user.bob.Shared",
        "std-dot": "user.bob.Shared",
        "std-slash": "INBOX/user.bob.Shared",
        "alt-dot": None,
        "alt-slash": "user.bob.Shared",
        "pymap": "user.bob.Shared",
    },
    "Shared Folders.team": {
        "dovecot": "Shared Folders.team",
        "std-dot": None,
        "std-slash": "INBOX/Shared Folders.team",
        "alt-dot": "Shared Folders.team",
        "alt-slash": "Shared Folders.team",
        "pymap": "Shared Folders.team",
    },
    "Lists//python": {k: None for k in ALL},
    "Lists/": {k: None for k in ALL},
}


@pytest.mark.parametrize("portable", MAPPING)
@pytest.mark.parametrize("server", ALL)
def test_mapping(portable: str, server: str) -> None:
    ns = ALL[server]
    want = MAPPING[portable][server]
    if want is None:
        with pytest.raises(UnportableName):
            ns.to_server(portable)
        assert ns.refusal(portable) is not None
    else:
        assert ns.to_server(portable) == want
        assert ns.refusal(portable) is None


def test_refusal_names_the_servers_rules() -> None:
    msg = STD_DOT.refusal("Projects/v1.2")
    assert msg == (
        "mailbox 'Projects/v1.2' cannot exist on this server: '.' separates levels here, so a level "
        "cannot contain it ('v1.2'); write levels with \"/\" and rename the level "
        "(personal prefix 'INBOX.', separator '.', from NAMESPACE)"
    )
    assert "no hierarchy" in str(FLAT.refusal("a/b"))
    assert FLAT.to_server("Archive") == "Archive"


def test_server_names_are_never_mapped_again() -> None:
    # What LIST returned goes back as it is, even where it would not parse as a portable name.
    assert ALT_DOT.to_server(ServerName("L1.L2")) == "L1.L2"
    assert STD_DOT.to_server(ServerName("INBOX.Trash")) == "INBOX.Trash"


def test_without_namespace_the_list_root_decides() -> None:
    assert PYMAP.summary() == "personal prefix '', separator '/', from no NAMESPACE; LIST \"\" \"\""
    assert Namespaces.from_list_root(".").to_server("Lists/python") == "Lists.python"


@pytest.mark.parametrize("server", ALL)
def test_to_portable_inverts_to_server(server: str) -> None:
    ns = ALL[server]
    rng = random.Random(server)
    words = ["Lists", "python", "Archive", "2024", "café", "a b", "x-y", "INBOX", "Trash"]
    for _ in range(300):
        name = "/".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
        if name.upper().startswith("INBOX/") or name.upper() == "INBOX":
            name = "INBOX" + name[5:]
        server_name = ns.to_server(name)
        portable = ns.to_portable(server_name)
        assert portable is not None and ns.to_server(portable) == server_name, (name, server_name)
        if ns.personal.upper() != "INBOX" + str(ns.separator) or not name.startswith("INBOX/"):
            assert portable == name  # INBOX/x and x are one name under an INBOX. prefix: x is shown


def test_to_portable_of_names_outside_the_personal_namespace() -> None:
    assert STD_DOT.to_portable("INBOX.Lists.python") == "Lists/python"
    assert STD_DOT.to_portable("INBOX") == "INBOX"
    assert STD_DOT.to_portable("Top") is None  # Cyrus's shared namespace, not the user's
    assert STD_DOT.to_portable("user.bob.x") == "user.bob.x"  # as is, both ways
    assert ALT_DOT.to_portable("Lists.python") == "Lists/python"
    assert DOVECOT.to_portable("Lists/python") == "Lists/python"
    assert DOVECOT.to_portable("v1.2") == "v1.2"
    # A "/" inside a level of a "." server has no portable spelling.
    assert Namespaces.from_response([("", ".")]).to_portable("a/b") is None


def test_template_values_cannot_add_levels_on_any_server() -> None:
    # The engine sanitises values against "/" and "." (and the server's separator, whatever it
    # is): `Lists/{match.1}` with "evil.a/b" stays one level everywhere.
    value = sanitize_value("evil.a/b\\c", "/")
    for ns in ALL.values():
        server = ns.to_server(f"Lists/{value}")
        sep = ns.separator
        assert sep is not None
        assert server.removeprefix(ns.personal).split(sep) == ["Lists", "evil_a_b_c"]


def test_describe() -> None:
    assert describe(STD_DOT, ["Lists/python", "INBOX", "v1.2"]) == [
        "mailbox names: personal prefix 'INBOX.', separator '.', from NAMESPACE",
        "names in rules and configuration use \"/\" between levels: 'Lists/python' is 'INBOX.Lists.python'",
        "a name starting with 'INBOX.' is the server's own and is used as written",
        "a level cannot contain '.' (it separates levels on this server)",
        "  'Lists/python' -> 'INBOX.Lists.python'",
        "  'INBOX' -> 'INBOX'",
        "  'v1.2': " + str(STD_DOT.refusal("v1.2")),
    ]
    assert describe(DOVECOT) == [
        "mailbox names: personal prefix '', separator '/', from NAMESPACE",
        'names in rules and configuration are used as written ("/" between levels)',
    ]


def test_check_names_points_at_the_rule() -> None:
    text = (
        'rule "a" in "INBOX", "Work/v2.0" { when all then move to "Lists/{match.1}.old" }\n'
        'rule "b" { when all then copy to "Lists/python" }\n'
    )
    rf, diags = parse_text(text, "10.rules")
    assert rf is not None and not diags
    got = check_names(ALT_DOT, rf.rules, [("accounts.main.trash", "Deleted.Items")])
    assert [(str(d.span), d.message.split(":")[0]) for d in got] == [
        ("10.rules:1:1", "mailbox 'Work/v2.0' cannot exist on this server"),
        ("10.rules:1:58", "mailbox 'Lists/x.old' cannot exist on this server"),
        ("accounts.main.trash:0:0", "mailbox 'Deleted.Items' cannot exist on this server"),
    ]
    assert check_names(DOVECOT, rf.rules, [("accounts.main.trash", "Deleted.Items")]) == []


def test_destinations_resolve_in_order_configured_special_use_default() -> None:
    from mailrules.imap.commands import MailboxInfo
    from mailrules.imap.destinations import listed, resolve

    listing = [
        MailboxInfo(ServerName("INBOX"), ".", frozenset()),
        MailboxInfo(ServerName("INBOX.Deleted"), ".", frozenset({"\\Trash"})),
        MailboxInfo(ServerName("INBOX.Lists"), ".", frozenset({"\\Noselect"})),
    ]
    special = {"\\Trash": "INBOX.Deleted"}
    assert listed("inbox", listing, STD_DOT) and listed("Deleted", listing, STD_DOT)
    assert not listed("Lists", listing, STD_DOT) and not listed("v1.2", listing, STD_DOT)
    got = resolve("\\Trash", None, special, STD_DOT, listing)
    assert (got.portable, got.server, got.origin) == ("Deleted", "INBOX.Deleted", "SPECIAL-USE")
    assert got.exists
    got = resolve("\\Trash", "Bin", special, STD_DOT, listing)
    assert (got.portable, got.server, got.origin, got.exists) == ("Bin", "INBOX.Bin", "configured", False)
    assert got.describe(True) == "Trash: 'Bin' is 'INBOX.Bin' (configured): missing, created on first use"
    got = resolve("\\Archive", None, special, STD_DOT, listing)
    assert got.describe(False) == (
        "Archive: 'Archive' is 'INBOX.Archive' (no \\Archive mailbox: the default name in the personal "
        "namespace): missing, and create_mailboxes = false: actions into it fail"
    )
    outside = resolve("\\Trash", None, {"\\Trash": "Top.Trash"}, STD_DOT, listing)  # no portable name
    assert outside.server == "Top.Trash" and outside.refusal is None


def test_configuration_refuses_an_empty_level_at_load() -> None:
    from mailrules.config.names import mailbox_problem

    assert mailbox_problem("Lists/python") is None and mailbox_problem("INBOX.Lists") is None
    for bad in ("Lists//python", "/Lists", "Lists/"):
        assert mailbox_problem(bad) == (
            f'mailbox name {bad!r} has an empty level ("/" separates levels: no leading, trailing or '
            'doubled "/")'
        )
