"""Forms of the server-rendered pages: they validate input and name the bad field."""

from __future__ import annotations

import json

from django import forms

from labelling.releases.checks import CHECKS
from labelling.releases.formats import FORMATS


class ThresholdGoalsForm(forms.Form):
    """What the threshold should achieve."""

    cost_fp = forms.FloatField(min_value=0, initial=1.0, label="Cost of a false positive")
    cost_fn = forms.FloatField(min_value=0, initial=1.0, label="Cost of a false negative")
    precision = forms.FloatField(
        min_value=0.001, max_value=1, required=False, label="Target precision"
    )
    recall = forms.FloatField(min_value=0.001, max_value=1, required=False, label="Target recall")

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if data.get("cost_fp") == 0 and data.get("cost_fn") == 0:
            raise forms.ValidationError("at least one of the two costs must be above zero")
        return data


class ApplyThresholdForm(forms.Form):
    """Set the project's decision threshold."""

    threshold = forms.FloatField(min_value=0.000001, max_value=1)
    note = forms.CharField(required=False, max_length=2000)


class ReleaseForm(forms.Form):
    """Freeze a new release: format, filters, and an override of failed checks with a reason."""

    format = forms.ChoiceField(choices=[(f, f) for f in FORMATS], initial="jsonl")
    since_last = forms.BooleanField(
        required=False, label="Only items decided since the last release"
    )
    split = forms.CharField(required=False, max_length=50, label="Only this split")
    source = forms.CharField(required=False, max_length=100, label="Only this source")
    override_reason = forms.CharField(
        required=False,
        max_length=2000,
        label="Release even though checks fail, because",
        widget=forms.TextInput(attrs={"size": 50}),
    )
    override_checks = forms.MultipleChoiceField(
        choices=[(c, c) for c in CHECKS],
        required=False,
        label="Override only these checks",
        widget=forms.CheckboxSelectMultiple,
    )
    include_personal = forms.BooleanField(
        required=False, label="Include the payload fields marked personal"
    )


class ProblemForm(forms.Form):
    """Describe a problem and add patterns: existing items by external id, new ones as JSON
    lines `{"external_id": …, "payload": {…}}`. The service checks the values themselves."""

    name = forms.CharField(max_length=200, required=False)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)
    harm = forms.FloatField(min_value=0.000001, max_value=1000, required=False, label="Harm factor")
    status = forms.ChoiceField(
        choices=[("open", "open"), ("fixed", "fixed"), ("wont_fix", "won't fix")], required=False
    )
    reporter = forms.CharField(max_length=200, required=False)
    items = forms.CharField(
        required=False,
        label="Existing items (external ids)",
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    patterns = forms.CharField(
        required=False,
        label="New patterns (JSON lines)",
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    remove_items = forms.CharField(
        required=False,
        label="Remove patterns (external ids)",
        widget=forms.TextInput(),
    )

    def clean_items(self) -> list[str]:
        return self.cleaned_data["items"].replace(",", " ").split()

    def clean_remove_items(self) -> list[str]:
        return self.cleaned_data["remove_items"].replace(",", " ").split()

    def clean_patterns(self) -> list[object]:
        rows = []
        for number, line in enumerate(self.cleaned_data["patterns"].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise forms.ValidationError(f"line {number} is not JSON: {exc.msg}") from None
        return rows


class ModelVersionForm(forms.Form):
    """Describe a candidate model."""

    name = forms.CharField(max_length=100)
    note = forms.CharField(required=False, max_length=5000)
    link = forms.CharField(required=False, max_length=500)
    git_hash = forms.CharField(required=False, max_length=64)
