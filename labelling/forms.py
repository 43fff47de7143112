"""Forms of the server-rendered pages: they validate input and name the bad field."""

from __future__ import annotations

from django import forms


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
