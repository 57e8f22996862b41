"""The console's form posts: application/x-www-form-urlencoded, bounded, typed on access.

A browser posts every field as text; what a field must be (a bounded string, an
integer in a range, a checkbox, one of a few choices) is said where it is read,
and anything else is the poster's mistake: a 400 with a sentence, never a 500.
"""

from urllib.parse import parse_qs

from ..http import ApiError, bad_request

MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 200
# Row ids are 32-bit on PostgreSQL: a larger number is no row, not a database error.
MAX_ID = 2**31 - 1
FORM_TYPE = "application/x-www-form-urlencoded"


class Form:
    """The fields of one post; the first value of a repeated field counts."""

    def __init__(self, fields):
        self.fields = fields

    @classmethod
    def parse(cls, content_type, body):
        if (content_type or "").split(";")[0].strip().lower() != FORM_TYPE:
            raise ApiError(415, "forms are posted as " + FORM_TYPE)
        if len(body) > MAX_FORM_BYTES:
            raise ApiError(413, f"the form is larger than {MAX_FORM_BYTES} bytes")
        try:
            text = body.decode("utf-8")
            fields = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS,
                              errors="strict")
        except UnicodeDecodeError:
            raise bad_request("the form is not UTF-8") from None
        except ValueError:
            raise bad_request(f"the form has more than {MAX_FIELDS} fields") from None
        return cls({name: values[0] for name, values in fields.items()})

    def text(self, name, limit, required=False, label=None):
        """The field stripped of surrounding blanks; '' when absent and not required."""
        value = self.fields.get(name, "").strip()
        label = label or name.replace("_", " ")
        if required and not value:
            raise bad_request(f"{label} is required")
        if len(value) > limit:
            raise bad_request(f"{label} is longer than {limit} characters")
        if any(ord(c) < 0x20 and c not in "\t\r\n" for c in value):
            raise bad_request(f"{label} contains control characters")
        return value

    def secret(self, name, limit):
        """A password field as typed: no stripping, bounded."""
        value = self.fields.get(name, "")
        if len(value) > limit:
            raise bad_request(f"{name.replace('_', ' ')} is longer than {limit} characters")
        return value

    def integer(self, name, minimum=None, maximum=None, optional=False):
        """An integer field; None when ``optional`` and empty."""
        text = self.fields.get(name, "").strip()
        if not text and optional:
            return None
        if not text.isdigit() or len(text) > 18:
            raise bad_request(f"{name.replace('_', ' ')} must be a number")
        value = int(text)
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise bad_request(f"{name.replace('_', ' ')} is out of range")
        return value

    def reference(self, name):
        """An optional row id (a select box's value); None for '(none)'."""
        return self.integer(name, minimum=1, maximum=MAX_ID, optional=True)

    def checked(self, name):
        """A checkbox: present means ticked."""
        return name in self.fields

    def choice(self, name, choices):
        value = self.fields.get(name, "")
        if value not in choices:
            raise bad_request(f"{name.replace('_', ' ')} must be one of {', '.join(choices)}")
        return value

    def get(self, name):
        return self.fields.get(name)
