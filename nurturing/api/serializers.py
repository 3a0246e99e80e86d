from rest_framework import serializers

from ..models import Enrollment, Sequence


class SequenceOutputSerializer(serializers.ModelSerializer):
    steps = serializers.SerializerMethodField()

    class Meta:
        model = Sequence
        fields = ["id", "name", "slug", "active", "segment", "allow_reentry", "steps"]

    def get_steps(self, obj) -> int:
        return obj.steps.count()


class EnrollInputSerializer(serializers.Serializer):
    leads = serializers.ListField(child=serializers.IntegerField(min_value=1), min_length=1, max_length=1000)


class EnrollmentOutputSerializer(serializers.ModelSerializer):
    sequence_name = serializers.CharField(source="sequence.name", read_only=True)

    class Meta:
        model = Enrollment
        fields = ["id", "sequence", "sequence_name", "lead", "status", "exit_reason", "enrolled_at", "ended_at"]


class EnrollResultSerializer(serializers.Serializer):
    enrolled = serializers.ListField(child=serializers.IntegerField())
    already = serializers.ListField(child=serializers.IntegerField())
    errors = serializers.DictField(child=serializers.CharField())
