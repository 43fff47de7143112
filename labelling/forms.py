"""Forms of the server-rendered pages: they validate input and name the bad field."""

from __future__ import annotations

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
