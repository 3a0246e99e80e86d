from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from .models import BareRow


class BareInput(serializers.Serializer):
    email = serializers.CharField(max_length=254)


class BareView(APIView):
    """A bare DRF endpoint: validate one field, insert one row."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def post(self, request):
        data = BareInput(data=request.data)
        data.is_valid(raise_exception=True)
        row = BareRow.objects.create(email=data.validated_data["email"], payload=request.data)
        return Response({"id": row.pk}, status=status.HTTP_202_ACCEPTED)
