"""Custom Attributes pages: the extension attributes an IdP can map."""

from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import url_for

from ..activity import audit
from ..forms import AttributeForm
from ..forms import ConfirmForm
from ..models import CustomAttribute
from ..models import duplicate_attribute
from .base import bp


@bp.route("/attributes", methods=("GET", "POST"))
def attributes():
    """List, and add, custom user attributes an IdP can map."""
    form = AttributeForm()
    if form.validate_on_submit():
        name = form.name.data
        existing = CustomAttribute.get_or_none(CustomAttribute.name == name)
        if existing:
            form.name.errors.append(duplicate_attribute(existing.name, name))
        else:
            CustomAttribute.create(name=name, type=form.type.data)
            audit("Custom Attribute Added", f"{name} ({form.type.data})")
            flash(f"Attribute {name} added; /Schemas now advertises it.", "success")
            return redirect(url_for("console.attributes"))
    return render_template(
        "admin/attributes.html",
        form=form,
        attributes=list(CustomAttribute.select().order_by(CustomAttribute.id)),
        urn=current_app.config["SCIM_CUSTOM_SCHEMA"],
    )


@bp.route("/attributes/<int:attribute_id>/delete", methods=("GET", "POST"))
def delete_attribute(attribute_id):
    """Confirm, then delete a custom attribute definition."""
    attribute = CustomAttribute.get_or_none(CustomAttribute.id == attribute_id)
    if attribute is None:
        abort(404)
    form = ConfirmForm()
    if form.validate_on_submit():
        attribute.delete_instance()
        audit("Custom Attribute Deleted", f"{attribute.name} ({attribute.type})")
        flash(f"Attribute {attribute.name} deleted.", "success")
        return redirect(url_for("console.attributes"))
    return render_template(
        "admin/confirm.html",
        form=form,
        title=f"Delete attribute {attribute.name}?",
        message=(
            "The attribute leaves /Schemas and its stored values stop being shown or "
            "returned. Remove its mapping in the identity provider too."
        ),
        confirm_label="Delete attribute",
        cancel_url=url_for("console.attributes"),
        danger=True,
    )
