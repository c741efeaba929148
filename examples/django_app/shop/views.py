"""POST /orders (email, total) places an order; GET /orders/ID says whether its receipt went out."""

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_POST

from .models import Order
from .tasks import send_receipt


@require_POST
def place_order(request: HttpRequest) -> JsonResponse:
    try:
        with transaction.atomic():
            order = Order.objects.create(email=request.POST["email"], total=int(request.POST["total"]))
            job_id = send_receipt.enqueue(order.id)  # written in this transaction, with the order
            if order.total <= 0:
                raise ValueError("an order must cost something")  # rolls back: no order, no receipt job
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"order": order.id, "job": job_id}, status=201)


def order_status(request: HttpRequest, order_id: int) -> JsonResponse:
    order = get_object_or_404(Order, pk=order_id)
    return JsonResponse({"order": order.id, "receipt_sent": order.receipt_sent})
