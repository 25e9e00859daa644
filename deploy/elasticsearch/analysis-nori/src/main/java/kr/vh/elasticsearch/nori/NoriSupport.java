package kr.vh.elasticsearch.nori;

import org.apache.lucene.analysis.ko.KoreanPartOfSpeechStopFilter;
import org.apache.lucene.analysis.ko.KoreanTokenizer;
import org.apache.lucene.analysis.ko.POS;
import org.apache.lucene.analysis.ko.dict.UserDictionary;

import java.io.IOException;
import java.io.StringReader;
import java.io.UncheckedIOException;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/** Settings parsing shared by the components; mirrors Elasticsearch's official analysis-nori. */
final class NoriSupport {

    private NoriSupport() {}

    /** {@code decompound_mode}: none, discard (default) or mixed. */
    static KoreanTokenizer.DecompoundMode decompoundMode(String value) {
        if (value == null || value.isBlank()) {
            return KoreanTokenizer.DEFAULT_DECOMPOUND;
        }
        try {
            return KoreanTokenizer.DecompoundMode.valueOf(value.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(
                "Unknown decompound_mode [" + value + "]; expected one of none, discard, mixed", e);
        }
    }

    /**
     * {@code stoptags}: part-of-speech tags to drop. Absent (or empty: the stable
     * settings API cannot tell them apart) means Lucene's default set, the same
     * default as the official plugin (E, IC, J, MAG, MAJ, MM, SP, SSC, SSO, SC, SE,
     * XPN, XSA, XSN, XSV, UNA, NA, VSV).
     */
    static Set<POS.Tag> stopTags(List<String> tags) {
        if (tags == null || tags.isEmpty()) {
            return KoreanPartOfSpeechStopFilter.DEFAULT_STOP_TAGS;
        }
        Set<POS.Tag> result = EnumSet.noneOf(POS.Tag.class);
        for (String tag : tags) {
            String t = tag.trim();
            if (t.isEmpty()) {
                continue;
            }
            try {
                result.add(POS.resolveTag(t));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException("Unknown nori part-of-speech tag [" + t + "] in stoptags", e);
            }
        }
        return result;
    }

    /**
     * {@code user_dictionary_rules}: inline user dictionary entries ("세종시 세종 시").
     * File based {@code user_dictionary} is refused loudly rather than ignored.
     */
    static UserDictionary userDictionary(String path, List<String> rules) {
        if (path != null && !path.isBlank()) {
            throw new IllegalArgumentException(
                "user_dictionary [" + path + "] is not supported by the vh-analysis-nori plugin; "
                    + "put the entries in user_dictionary_rules instead");
        }
        if (rules == null || rules.isEmpty()) {
            return null;
        }
        // One entry per surface form (the dictionary refuses duplicates); first wins.
        Map<String, String> byTerm = new LinkedHashMap<>();
        for (String rule : rules) {
            String line = rule.trim();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            byTerm.putIfAbsent(line.split("\\s+", 2)[0], line);
        }
        if (byTerm.isEmpty()) {
            return null;
        }
        try {
            return UserDictionary.open(new StringReader(String.join("\n", byTerm.values())));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot build the nori user dictionary", e);
        }
    }
}
