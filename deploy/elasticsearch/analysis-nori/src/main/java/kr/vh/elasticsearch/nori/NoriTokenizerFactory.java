package kr.vh.elasticsearch.nori;

import org.apache.lucene.analysis.Tokenizer;
import org.apache.lucene.analysis.ko.KoreanTokenizer;
import org.apache.lucene.analysis.ko.dict.UserDictionary;
import org.elasticsearch.plugin.Inject;
import org.elasticsearch.plugin.NamedComponent;
import org.elasticsearch.plugin.analysis.TokenizerFactory;
import org.elasticsearch.plugin.settings.AnalysisSettings;
import org.elasticsearch.plugin.settings.BooleanSetting;
import org.elasticsearch.plugin.settings.ListSetting;
import org.elasticsearch.plugin.settings.StringSetting;

import java.util.List;

/** {@code nori_tokenizer}: Lucene's KoreanTokenizer. */
@NamedComponent("nori_tokenizer")
public class NoriTokenizerFactory implements TokenizerFactory {

    @AnalysisSettings
    public interface Settings {
        @StringSetting(path = "decompound_mode", defaultValue = "discard")
        String decompoundMode();

        @BooleanSetting(path = "discard_punctuation", defaultValue = true)
        boolean discardPunctuation();

        @ListSetting(path = "user_dictionary_rules")
        List<String> userDictionaryRules();

        @StringSetting(path = "user_dictionary", defaultValue = "")
        String userDictionary();
    }

    private final KoreanTokenizer.DecompoundMode mode;
    private final boolean discardPunctuation;
    private final UserDictionary userDictionary;

    @Inject
    public NoriTokenizerFactory(Settings settings) {
        this.mode = NoriSupport.decompoundMode(settings.decompoundMode());
        this.discardPunctuation = settings.discardPunctuation();
        this.userDictionary = NoriSupport.userDictionary(settings.userDictionary(), settings.userDictionaryRules());
    }

    @Override
    public Tokenizer create() {
        return new KoreanTokenizer(
            KoreanTokenizer.DEFAULT_TOKEN_ATTRIBUTE_FACTORY, userDictionary, mode, false, discardPunctuation);
    }
}
