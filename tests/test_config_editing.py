"""
Tests for L{tunnelkit.config.editing}: setting one key of the agent file
while keeping the rest of it as written.
"""

from __future__ import annotations

import os
import stat

from twisted.trial.unittest import SynchronousTestCase

from tunnelkit.config import ConfigError, HostPort, load_agent_config
from tunnelkit.config.editing import set_agent_config_key


class EditingTestCase(SynchronousTestCase):
    """
    Shared helpers: a fresh directory and file contents.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.path = os.path.join(self.directory, "tunnelkit.yml")

    def write(self, text: str) -> None:
        with open(self.path, "w", encoding="utf-8", newline="") as f:
            f.write(text)

    def read(self) -> str:
        with open(self.path, encoding="utf-8", newline="") as f:
            return f.read()


class CreateTests(EditingTestCase):
    """
    Setting a key in a file that does not exist yet.
    """

    def test_creates_file(self) -> None:
        """
        A missing file is created with the version and the key.
        """
        set_agent_config_key(self.path, "authtoken", "tok123")

        self.assertEqual(self.read(), 'version: "2"\nauthtoken: "tok123"\n')

    def test_creates_parent_directories(self) -> None:
        """
        Missing parent directories are created.
        """
        path = os.path.join(self.directory, "a", "b", "tunnelkit.yml")

        set_agent_config_key(path, "server_addr", "edge.example:4443")

        self.assertEqual(
            load_agent_config([path]).server_addr, HostPort("edge.example", 4443)
        )

    def test_new_file_private(self) -> None:
        """
        A created file is readable and writable by its owner only.
        """
        set_agent_config_key(self.path, "authtoken", "tok123")

        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_no_temporary_files_left(self) -> None:
        """
        Only the configuration file remains in its directory.
        """
        set_agent_config_key(self.path, "authtoken", "tok123")

        self.assertEqual(os.listdir(self.directory), ["tunnelkit.yml"])


class RewriteTests(EditingTestCase):
    """
    Setting a key in an existing file.
    """

    def test_replaces_key_keeping_comments(self) -> None:
        """
        Only the key's value changes; comments and other lines stay.
        """
        self.write(
            '# my agent\nversion: "2"\n# the token\nauthtoken: old # keep me\n'
            "tunnels:\n  web:  # site\n    proto: http\n    addr: 80\n"
        )

        set_agent_config_key(self.path, "authtoken", "new")

        self.assertEqual(
            self.read(),
            '# my agent\nversion: "2"\n# the token\nauthtoken: "new" # keep me\n'
            "tunnels:\n  web:  # site\n    proto: http\n    addr: 80\n",
        )

    def test_replaces_null_value(self) -> None:
        """
        A key written without a value gets the value.
        """
        self.write('version: "2"\nauthtoken:\nlog: stdout\n')

        set_agent_config_key(self.path, "authtoken", "tok")

        self.assertEqual(self.read(), 'version: "2"\nauthtoken: "tok"\nlog: stdout\n')

    def test_appends_absent_key(self) -> None:
        """
        An absent key is appended at the end.
        """
        self.write('version: "2"\nlog: stdout # logs\n')

        set_agent_config_key(self.path, "server_addr", "edge.example")

        self.assertEqual(
            self.read(),
            'version: "2"\nlog: stdout # logs\nserver_addr: "edge.example"\n',
        )

    def test_adds_version_before_first_key(self) -> None:
        """
        A file without C{version} gets one above its first key, below the
        leading comments.
        """
        self.write("# header\n\nlog: stdout\n")

        set_agent_config_key(self.path, "authtoken", "tok")

        self.assertEqual(
            self.read(), '# header\n\nversion: "2"\nlog: stdout\nauthtoken: "tok"\n'
        )

    def test_adds_version_when_replacing_first_key(self) -> None:
        """
        Replacing the first key of a file without a version keeps both.
        """
        self.write("authtoken: old\n")

        set_agent_config_key(self.path, "authtoken", "new")

        self.assertEqual(self.read(), 'version: "2"\nauthtoken: "new"\n')

    def test_empty_file(self) -> None:
        """
        A file with only a comment gets the version and key after it.
        """
        self.write("# nothing yet")

        set_agent_config_key(self.path, "authtoken", "tok")

        self.assertEqual(self.read(), '# nothing yet\nversion: "2"\nauthtoken: "tok"\n')

    def test_keeps_crlf(self) -> None:
        """
        A file with Windows line endings keeps them on added lines.
        """
        self.write('version: "2"\r\nlog: stdout\r\n')

        set_agent_config_key(self.path, "authtoken", "tok")

        self.assertEqual(
            self.read(), 'version: "2"\r\nlog: stdout\r\nauthtoken: "tok"\r\n'
        )

    def test_replaces_block_value_keeping_following_comment(self) -> None:
        """
        A key whose value was a block list is replaced up to the list's end,
        keeping a comment that follows it.
        """
        self.write('version: "2"\nlog:\n  - a\n  - b\n# after\nlog_level: info\n')

        set_agent_config_key(self.path, "log", "stdout")

        self.assertEqual(
            self.read(), 'version: "2"\nlog: "stdout"\n# after\nlog_level: info\n'
        )

    def test_special_characters_round_trip(self) -> None:
        """
        A value with quotes, a hash and a colon reads back unchanged.
        """
        metadata = 'a"b#c: d\\e \u00e9'

        set_agent_config_key(self.path, "metadata", metadata)

        self.assertEqual(load_agent_config([self.path]).metadata, metadata)

    def test_typed_value_unquoted(self) -> None:
        """
        A boolean key is written unquoted so it loads as a boolean.
        """
        self.write('version: "2"\n')

        set_agent_config_key(self.path, "remote_management", "false")

        self.assertFalse(load_agent_config([self.path]).remote_management)

    def test_keeps_existing_mode(self) -> None:
        """
        The file's permissions are kept when it is rewritten.
        """
        self.write('version: "2"\n')
        os.chmod(self.path, 0o640)

        set_agent_config_key(self.path, "authtoken", "tok")

        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)

    def test_flow_style_file(self) -> None:
        """
        A file written as one flow mapping is rewritten with the key set.
        """
        self.write("{log: stdout}\n")

        set_agent_config_key(self.path, "authtoken", "tok")

        config = load_agent_config([self.path])
        self.assertEqual(
            (config.version, config.log, config.authtoken), ("2", "stdout", "tok")
        )


class RejectTests(EditingTestCase):
    """
    Edits that would leave a bad file are refused, leaving it unchanged.
    """

    def test_unknown_key(self) -> None:
        """
        A misspelled key is refused with a suggestion.
        """
        error = self.assertRaises(
            ConfigError, set_agent_config_key, self.path, "authtokn", "x"
        )

        self.assertEqual(
            (error.code, error.key, os.path.exists(self.path)),
            ("TK_CONFIG_UNKNOWN_KEY", "authtokn", False),
        )
        self.assertIn("did you mean 'authtoken'?", error.message)

    def test_structured_key(self) -> None:
        """
        C{tunnels} cannot be set from the command line.
        """
        error = self.assertRaises(
            ConfigError, set_agent_config_key, self.path, "tunnels", "x"
        )

        self.assertEqual(error.code, "TK_CONFIG_UNKNOWN_KEY")

    def test_invalid_value_leaves_file(self) -> None:
        """
        A value that does not validate is refused and the file is unchanged;
        the error names the value given, not the line of the file, which
        still holds the old value.
        """
        original = 'version: "2"\nserver_addr: edge.example\n'
        self.write(original)

        error = self.assertRaises(
            ConfigError, set_agent_config_key, self.path, "server_addr", "edge:99999"
        )

        self.assertEqual(
            (error.code, error.path, error.line, error.key, self.read()),
            ("TK_CONFIG_INVALID_VALUE", None, None, "server_addr", original),
        )
        self.assertIn("given on the command line ('edge:99999')", error.message)
        self.assertIn(f"{self.path} is left unchanged", error.message)

    def test_invalid_authtoken_not_shown(self) -> None:
        """
        An authtoken with a space is refused, naming the value given on the
        command line without repeating it, and no line of the file.
        """
        original = 'version: "2"\nauthtoken: old-token\n'
        self.write(original)

        error = self.assertRaises(
            ConfigError, set_agent_config_key, self.path, "authtoken", "has space"
        )

        self.assertEqual(
            (error.code, error.line, error.key, self.read()),
            ("TK_CONFIG_INVALID_VALUE", None, "authtoken", original),
        )
        self.assertTrue(
            str(error).startswith("authtoken: the value given on the command line:"),
            str(error),
        )
        self.assertNotIn("has space", str(error))

    def test_broken_file_refused(self) -> None:
        """
        A file that does not parse is reported and left as it is.
        """
        original = "version: '2'\ntunnels: [\n"
        self.write(original)

        error = self.assertRaises(
            ConfigError, set_agent_config_key, self.path, "authtoken", "tok"
        )

        self.assertEqual((error.code, self.read()), ("TK_CONFIG_SYNTAX", original))
