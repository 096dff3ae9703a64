"""Admin console forms; every one carries a CSRF token (flask-wtf)."""

import re

from flask import abort
from flask import current_app
from flask import request
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from wtforms import PasswordField
from wtforms import SelectField
from wtforms import StringField
from wtforms import SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired
from wtforms.validators import EqualTo
from wtforms.validators import Length
from wtforms.validators import Optional
from wtforms.validators import Regexp

from .scim.schema import CUSTOM_TYPES

# The app sets WTF_CSRF_CHECK_DEFAULT = False: the SCIM API takes bearer
# tokens and no cookies, so only the console and sign-in pages call
# check_form_request(), which runs csrf.protect() for them.
csrf = CSRFProtect()
FORM_MIMETYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

EXPIRY_CHOICES = [
    SelectChoice("never", "Never"),
    SelectChoice("90", "90 days"),
    SelectChoice("180", "180 days"),
    SelectChoice("365", "1 year"),
]
TOKEN_ACTIONS = [
    SelectChoice("activate", "Set to Active"),
    SelectChoice("deactivate", "Set to Inactive"),
    SelectChoice("renew", "Renew"),
    SelectChoice("remove", "Remove"),
]


def check_form_request():
    """Refuse a console or sign-in request with NUL input (400) or without a valid CSRF token."""
    refuse_nul()
    if current_app.config["WTF_CSRF_ENABLED"]:
        csrf.protect()  # checks only the methods in WTF_CSRF_METHODS


def refuse_nul():
    """Answer 400 to console input with a NUL character."""
    # Nothing stored contains NUL (SCIM refuses it), and PostgreSQL cannot
    # even take it as a query parameter. The SCIM API answers NUL with its
    # own errors, so only the console and sign-in pages call this.
    values = list(request.args.values())
    if request.method == "POST" and request.mimetype in FORM_MIMETYPES:
        values += list(request.form.values())
    if any("\x00" in value for value in values) or "\x00" in request.path:
        abort(400)


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=150)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    submit = SubmitField("Sign in")


class LogoutForm(FlaskForm):
    submit = SubmitField("Sign out")


def _username_field():
    return StringField(
        "Username",
        validators=[
            DataRequired(),
            Length(max=150),
            Regexp(r"^[^\s]+$", message="A username has no spaces."),
        ],
    )


# The rules beyond length (common passwords, the username) are checked by the
# view with mdm.auth.password_problem, which also serves the CLI.
def _new_password_field(label="Password"):
    return PasswordField(
        label,
        validators=[
            DataRequired(),
            Length(max=1024, message="Use at most 1024 characters."),
        ],
    )


def _confirm_field(other="password"):
    return PasswordField(
        "Confirm password",
        validators=[
            DataRequired(),
            EqualTo(other, message="The passwords differ."),
        ],
    )


class SetupForm(FlaskForm):
    username = _username_field()
    password = _new_password_field()
    confirm = _confirm_field()
    submit = SubmitField("Create administrator")


class AddAdminForm(FlaskForm):
    username = _username_field()
    password = _new_password_field()
    confirm = _confirm_field()
    submit = SubmitField("Add administrator")


class ChangePasswordForm(FlaskForm):
    current = PasswordField(
        "Current password", validators=[DataRequired(), Length(max=1024)]
    )
    password = _new_password_field("New password")
    confirm = _confirm_field()
    submit = SubmitField("Change password")


class GenerateTokenForm(FlaskForm):
    label = StringField("Label (optional)", validators=[Optional(), Length(max=100)])
    expiry = SelectField("Expires", choices=EXPIRY_CHOICES, default="never")
    submit = SubmitField("Generate")

    def expires_in_days(self):
        return None if self.expiry.data == "never" else int(self.expiry.data)


class AddClientForm(GenerateTokenForm):
    submit = SubmitField("Add client")


class TokenActionForm(FlaskForm):
    action = SelectField("Select", choices=TOKEN_ACTIONS)
    submit = SubmitField("Apply")


class ConfirmForm(FlaskForm):
    submit = SubmitField("Confirm")


class AttributeForm(FlaskForm):
    name = StringField(
        "Attribute name",
        validators=[
            DataRequired(),
            Length(max=64),
            Regexp(
                re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$"),
                message="Start with a letter; use letters, digits, - and _ only.",
            ),
        ],
    )
    type = SelectField("Type", choices=[SelectChoice(t) for t in CUSTOM_TYPES])
    submit = SubmitField("Add attribute")
