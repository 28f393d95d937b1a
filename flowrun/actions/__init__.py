"""The action registry: every action type, one module each."""

from __future__ import annotations

from flowrun.actions.base import ActionType
from flowrun.actions.discount import Discount
from flowrun.actions.email import Email
from flowrun.actions.http import Http
from flowrun.actions.log import Log
from flowrun.actions.loyalty_points import LoyaltyPoints
from flowrun.actions.order_note import OrderNote
from flowrun.actions.purchase_order import PurchaseOrder
from flowrun.actions.push import Push
from flowrun.actions.slack import Slack
from flowrun.actions.sms import Sms
from flowrun.actions.support_ticket import SupportTicket
from flowrun.actions.tag_customer import TagCustomer
from flowrun.actions.update_stock import UpdateStock

REGISTRY: dict[str, ActionType] = {
    action.name: action
    for action in (
        Email(),
        Sms(),
        Push(),
        Slack(),
        Http(),
        Log(),
        TagCustomer(),
        Discount(),
        UpdateStock(),
        OrderNote(),
        LoyaltyPoints(),
        PurchaseOrder(),
        SupportTicket(),
    )
}

__all__ = ["REGISTRY", "ActionType"]
