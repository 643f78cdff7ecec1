"""Worker-site forms."""
from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password


class SignupForm(forms.Form):
    username = forms.CharField(max_length=150)
    email = forms.EmailField(required=False)
    country = forms.RegexField(regex=r"^[A-Za-z]{2}$", initial="US", max_length=2,
                               help_text="Two-letter country code (ISO 3166-1), e.g. US, DE, IN.")
    password1 = forms.CharField(label="Password", widget=forms.PasswordInput)
    password2 = forms.CharField(label="Password again", widget=forms.PasswordInput)
    invite_code = forms.CharField(max_length=32, required=False, widget=forms.HiddenInput)

    def __init__(self, *args, require_code: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.require_code = require_code

    def clean_username(self):
        name = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=name).exists():
            raise forms.ValidationError("This username is taken.")
        return name

    def clean(self):
        data = super().clean()
        if data.get("password1") != data.get("password2"):
            self.add_error("password2", "The two passwords differ.")
        elif data.get("password1"):
            try:
                validate_password(data["password1"])
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        if self.require_code and not data.get("invite_code"):
            self.add_error(None, "Joining this marketplace takes an invitation link from a requester.")
        return data
